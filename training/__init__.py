"""The training recipe for Causal2Vec models: data, loss, trainer and configs (``python -m training``)."""
