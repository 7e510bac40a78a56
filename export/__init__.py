"""Export a Causal2Vec checkpoint to ONNX for onnxruntime, with a parity check against torch: ``python -m export``.

The library's ONNX Runtime backend (``causal2vec.backends.onnx``) runs what this writes.
"""
