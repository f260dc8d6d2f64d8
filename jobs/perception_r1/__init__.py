"""Perception-R1: does a visual-perception reward in RLVR improve perception (and answers)?"""

from jobs.perception_r1 import job  # noqa: F401  (registers the job)
