"""O²-Searcher: a search agent trained with GRPO for open- and closed-ended questions."""

from jobs.o2_searcher import job  # noqa: F401  (registers the job)
