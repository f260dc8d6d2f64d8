"""Shared pieces of the reasoning jobs (CogMath, O²-Searcher, Perception-R1): the GRPO objective,
verifiable rewards and the small statistics they report. No job is registered here."""

from pathlib import Path

PAPERS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "papers"
"""The papers' published data, read-only, beside the checkout (see its SOURCES.md)."""
