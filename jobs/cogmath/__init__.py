"""CogMath: how much of a model's accuracy on math word problems is mastery?"""

from jobs.cogmath import job  # noqa: F401  (registers the job)
