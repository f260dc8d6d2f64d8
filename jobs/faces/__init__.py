"""Facial-expression data for the expression jobs (S4D, MELLM): a procedural face renderer with
action-unit-like controls (render.py), generated static/dynamic/micro-expression sets and the
loaders of real datasets from a local directory (datasets.py). Real expression corpora cannot
be redistributed, so the jobs run on generated faces unless a user points them at their own."""
