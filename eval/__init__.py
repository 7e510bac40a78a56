"""MTEB evaluation of Causal2Vec checkpoints and sentence-transformers baselines: ``python -m eval --help``.

mteb is imported only inside this package, and only when a command runs; ``causal2vec`` never imports it.
"""
