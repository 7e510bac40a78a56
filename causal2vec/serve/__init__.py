"""``causal2vec serve``: embeddings and search over HTTP, with dynamic batching (``pip install 'causal2vec[serve]'``).

:func:`create_app` builds the FastAPI app; :mod:`causal2vec.serve.batcher` batches concurrent requests on the
model's one thread; :func:`run_server` runs it under uvicorn.
"""

from causal2vec.serve.app import ServeSettings, create_app
from causal2vec.serve.server import run_server

__all__ = ["ServeSettings", "create_app", "run_server"]
