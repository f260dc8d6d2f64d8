"""Language-model and embedding backends shared by the jobs that retrieve or generate text.

``text_backend()`` / ``embedder()`` give the local default (models shipped inside PyPI wheels, no
network) or, by one setting (``jobs.llm`` / ``jobs.embedder`` in recast.yaml, or
``RECAST_JOBS__LLM``), any OpenAI-compatible server -- the same job code runs against either.
Every call goes through a disk cache, so reruns and resumed runs cost nothing.
"""

from jobs.backends.embed import Embedder, bm25_index, embedder, vector_index
from jobs.backends.text import GenParams, TextBackend, local_model_and_tokenizer, text_backend

__all__ = ["Embedder", "GenParams", "TextBackend", "bm25_index", "embedder", "local_model_and_tokenizer",
           "text_backend", "vector_index"]
