"""The job registry: ``@register`` a Job subclass in any module under jobs/; ``discover`` imports
them all (``get_job`` and ``all_jobs`` call it). Defined in jobs/base.py, re-exported here."""

from jobs.base import all_jobs, discover, get_job, register

__all__ = ["all_jobs", "discover", "get_job", "register"]
