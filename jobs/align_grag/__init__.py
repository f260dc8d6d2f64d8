"""The Align-GRAG job (job.py): data and PCST retrieval in graph.py, the aligner GNN in
aligner.py, its training and pruning in train.py."""

from jobs.align_grag.job import AlignGRAGJob

__all__ = ["AlignGRAGJob"]
