"""The dependency direction, read from the source: the library imports no repo tool, and each optional
dependency has one owning module. Plus what importing the library actually pulls in (a subprocess)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "causal2vec"
REPO_TOOLS = {"training", "export", "eval", "bench"}
# Each optional dependency and the one library module allowed to import it (None: no library module may).
OWNERS: dict[str, str | None] = {
    "faiss": "causal2vec/search/vectors.py",
    "onnxruntime": "causal2vec/backends/onnx.py",
    "onnx": None,
    "onnxscript": None,
    "peft": "causal2vec/adapters.py",
    "mteb": None,
    "datasets": None,
    "sentence_transformers": "causal2vec/st_module.py",
    "fastapi": "causal2vec/serve/app.py",
    "uvicorn": "causal2vec/serve/server.py",
    "prometheus_client": "causal2vec/serve/app.py",
    "openai": None,
}


def imported_modules(source: str) -> set[str]:
    """Every top-level module a file imports: import statements anywhere in it (functions and
    ``TYPE_CHECKING`` blocks included) and ``require("name", ...)`` / ``import_module("name")`` calls."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in ("require", "import_module") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value.split(".")[0])
    return found


def imports_by_file(package: Path) -> dict[str, set[str]]:
    """``{"causal2vec/x.py": {top-level modules it imports}}`` for every .py file under ``package``."""
    return {
        path.relative_to(package.parent).as_posix(): imported_modules(path.read_text(encoding="utf-8"))
        for path in sorted(package.rglob("*.py"))
    }


def tool_imports(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """The files that import a repo tool, with the tools they import."""
    return {name: modules & REPO_TOOLS for name, modules in imports.items() if modules & REPO_TOOLS}


def owners_of(imports: dict[str, set[str]], dependency: str) -> set[str]:
    """The files that import ``dependency``."""
    return {name for name, modules in imports.items() if dependency in modules}


def test_the_scanner_sees_every_kind_of_import(tmp_path):
    """The checks below can fail: a stray import of each kind, in a throw-away package, is found."""
    package = tmp_path / "causal2vec"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("import training.loop\nfrom export import onnx_export\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import faiss\n"
        "def f():\n    from eval.cli import main\n    return require('peft', 'train')\n"
    )
    (package / "c.py").write_text("import importlib\nmteb = importlib.import_module('mteb.models')\nfrom . import a\n")
    imports = imports_by_file(package)
    assert tool_imports(imports) == {"causal2vec/a.py": {"training", "export"}, "causal2vec/sub/b.py": {"eval"}}
    assert owners_of(imports, "faiss") == owners_of(imports, "peft") == {"causal2vec/sub/b.py"}
    assert owners_of(imports, "mteb") == {"causal2vec/c.py"}


def test_library_never_imports_the_repo_tools():
    stray = tool_imports(imports_by_file(LIBRARY))
    assert not stray, f"causal2vec must not import {sorted(REPO_TOOLS)}; found {stray}"


@pytest.mark.parametrize("dependency", list(OWNERS))
def test_each_optional_dependency_has_one_owner(dependency):
    owners = owners_of(imports_by_file(LIBRARY), dependency)
    expected = {OWNERS[dependency]} if OWNERS[dependency] else set()
    assert owners == expected, f"{dependency} is imported by {sorted(owners)}; only {sorted(expected)} may import it"


def test_library_import_does_not_pull_optional_stacks():
    code = (
        "import sys, causal2vec, causal2vec.cli, causal2vec.checkpoint, causal2vec.assets, causal2vec.data.bbc\n"
        "import causal2vec.search, causal2vec.backends.onnx\n"
        f"heavy = {sorted(set(OWNERS) | REPO_TOOLS)!r}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]", f"importing the library pulled in {out.strip()}"


# Modules of the model layer, below causal2vec/backends: what search/ must reach only through load_backend.
MODEL_MODULES = {
    "causal2vec.model", "causal2vec.checkpoint", "causal2vec.assets", "causal2vec.adapters", "causal2vec.projector",
    "causal2vec.st_module", "causal2vec.backends.onnx",
}  # fmt: skip


def library_imports(path: Path) -> set[str]:
    """The full names of the causal2vec modules a file imports (``from causal2vec.x import y`` counts x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("causal2vec")}


def test_search_loads_models_only_through_the_backend_layer():
    for path in sorted((LIBRARY / "search").rglob("*.py")):
        reached = library_imports(path) & MODEL_MODULES
        assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}; load models with load_backend"


def test_backends_are_registered_in_one_place():
    callers = {
        path.relative_to(ROOT).as_posix()
        for path in LIBRARY.rglob("*.py")
        if any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_backend"
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))
    }  # fmt: skip
    assert callers == {"causal2vec/backends/__init__.py"}


def test_no_library_module_guesses_a_backend_from_attributes():
    """Which backend a model is comes from its identity, not from ``hasattr(model, "session")`` and the like."""
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr") and node.args:
                attribute = node.args[1] if len(node.args) > 1 else None
                name = attribute.value if isinstance(attribute, ast.Constant) else None
                assert name not in ("session", "backend", "precision"), (
                    f"{path.relative_to(ROOT)}:{node.lineno} reads {name!r} to tell backends apart; use .identity"
                )
