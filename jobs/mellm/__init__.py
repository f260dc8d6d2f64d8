"""The MELLM job (job.py): the motion-enhanced colour map motion.py, the reader network
model.py, FACS-style descriptions describe.py, scores and plots analysis.py."""

from jobs.mellm.job import MELLMJob

__all__ = ["MELLMJob"]
