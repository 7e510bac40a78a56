"""An embedding job in its own process, for the tests that kill one part-way.

``python -m tests.embed_process CORPUS OUTPUT MODEL RAY_ADDRESS UNIT_SIZE`` runs :func:`embed_to_shards` with one
actor on the Ray cluster at RAY_ADDRESS (the test's own), in float32, and prints ``OK <shards written>``.
"""

from __future__ import annotations

import sys

from causal2vec.ray_embed import embed_to_shards

if __name__ == "__main__":
    corpus, output, model, address, unit_size = sys.argv[1:]
    report = embed_to_shards(
        corpus, output, model=model, dtype="float32", ray_address=address, actors=1, unit_size=int(unit_size),
        show_progress_bar=False,
    )  # fmt: skip
    print(f"OK {report.shards_written}")
