"""The ComoRAG job (job.py): memory layers in layers.py, the metacognitive loop in loop.py."""

from jobs.comorag.job import ComoRAGJob

__all__ = ["ComoRAGJob"]
