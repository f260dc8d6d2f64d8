"""The LightSAM job (job.py): optimizers in training/optim/sam.py, grid statistics in analysis.py."""

from jobs.lightsam.job import LightSAMJob

__all__ = ["LightSAMJob"]
