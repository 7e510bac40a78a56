"""Semantic search: a FAISS index of embeddings with a SQLite document store, on disk.

- :mod:`~causal2vec.search.index`: :class:`SemanticIndex`, the facade (build, load, add, delete, save, search);
- :mod:`~causal2vec.search.manifest`: the record (what an index holds, the identity of the model that embedded it);
- :mod:`~causal2vec.search.commit`: the commit protocol (writer lock, generations, folder swap);
- :mod:`~causal2vec.search.vectors`: everything that touches FAISS (the only module that imports it);
- :mod:`~causal2vec.search.ingest`: block-by-block ingestion (dedupe, embedding, the training spill);
- :mod:`~causal2vec.search.docstore`: the SQLite document store;
- :mod:`~causal2vec.search.corpus`: streaming corpus readers (JSONL, TSV, plain text).
"""

from causal2vec.search.commit import IndexBusyError
from causal2vec.search.corpus import Document
from causal2vec.search.index import Hit, SemanticIndex

__all__ = ["Document", "Hit", "IndexBusyError", "SemanticIndex"]
