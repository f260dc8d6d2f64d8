"""The GenKI job (job.py): knowledge base and probes in data.py, the InfoNCE retriever in
retriever.py, LoRA knowledge integration in integration.py, the consistency ensemble in ensemble.py."""

from jobs.genki.job import GenKIJob

__all__ = ["GenKIJob"]
