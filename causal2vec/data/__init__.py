"""Corpora the library reads offline: BBC News now, the training sources next."""
