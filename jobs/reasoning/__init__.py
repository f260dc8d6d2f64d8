"""Shared pieces of the reasoning jobs (CogMath, O²-Searcher, Perception-R1): the GRPO objective,
verifiable rewards and the small statistics they report. No job is registered here."""
