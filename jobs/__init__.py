"""Offline batch jobs: one module (or small subpackage) per paper, sharing one runner.

See jobs/base.py for the interface a job implements and jobs/README.md for the jobs and
their measured results.
"""
