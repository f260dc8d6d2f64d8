"""The S4D job (job.py): encoder video_vit.py, MAE mae.py, MoAE moae.py, fine-tuning model
classifier.py, training cells train.py, tables and plots report.py."""

from jobs.s4d.job import S4DJob

__all__ = ["S4DJob"]
