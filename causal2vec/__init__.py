"""causal2vec: decoder-only LLMs as text embedding models, the Causal2Vec way.

>>> from causal2vec import Causal2Vec
>>> model = Causal2Vec.from_pretrained("default")
>>> model.encode_query(["what is causal attention"]).shape
(1, 1152)
"""

import logging

from causal2vec.backends.onnx import OnnxCausal2Vec
from causal2vec.config import Causal2VecConfig
from causal2vec.model import Causal2Vec
from causal2vec.search.corpus import Document
from causal2vec.search.index import Hit, SemanticIndex

__all__ = ["Causal2Vec", "Causal2VecConfig", "Document", "Hit", "OnnxCausal2Vec", "SemanticIndex"]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
