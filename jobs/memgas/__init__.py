"""The MemGAS job (job.py): memory mechanism in memory.py, LoCoMo loading in data.py, the loop and
verdict in evaluate.py."""

from jobs.memgas.job import MemGASJob

__all__ = ["MemGASJob"]
