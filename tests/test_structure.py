"""The dependency direction, read from the source: the library imports no repo tool, each optional dependency
has one owning module, and no library modules import each other in a circle. Plus what importing the library
actually pulls in (a subprocess), and where the durable-file helpers live."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
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
    "mteb": "causal2vec/mteb_encoder.py",
    "datasets": None,
    "sentence_transformers": "causal2vec/st_module.py",
    "fastapi": "causal2vec/serve/app.py",
    "uvicorn": "causal2vec/serve/server.py",
    "prometheus_client": "causal2vec/serve/app.py",
    "openai": None,
    "ray": "causal2vec/ray_embed.py",
    "pyarrow": "causal2vec/shards.py",
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


# ---------------------------------------------------------------- import cycles among the library's own modules


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, in functions too, except under ``if TYPE_CHECKING:`` (never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _runtime_imports(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _runtime_imports(node)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_graph(package: Path) -> dict[str, set[str]]:
    """``{"causal2vec/x.py": {the package's files it imports}}``, resolved from absolute and relative imports.

    ``from p import name`` counts as an import of ``p/name.py`` when that is a module, else of ``p``'s own file;
    parent packages that Python initialises on the way are not counted (every module would circle its __init__).
    """
    root = package.parent

    def file_of(module: str) -> str | None:
        base = root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path.relative_to(root).as_posix()
        return None

    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(root).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(file_of(alias.name) for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                parent = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{parent}.{base}" if base else parent
            targets.update(file_of(f"{base}.{a.name}") or file_of(base) for a in node.names)
        graph[path.relative_to(root).as_posix()] = {t for t in targets if t is not None}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports, as ``[a, b, ..., a]``; ``[]`` when there is none (depth-first, in sorted order)."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target, [*path, node]):
                return cycle
        done.add(node)
        return []

    for node in sorted(graph):
        if cycle := visit(node, []):
            return cycle
    return []


def test_the_cycle_finder_sees_a_circle_through_every_kind_of_import(tmp_path):
    """A circle through an absolute, a relative and a function-level import is found; a ``TYPE_CHECKING`` one
    is not a circle."""
    package = tmp_path / "causal2vec"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from causal2vec.a import x\n")
    (package / "a.py").write_text("from causal2vec.b import y\nx = 1\n")
    (package / "b.py").write_text("def f():\n    from .sub import c\ny = 2\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "c.py").write_text("import causal2vec.a\n")
    (package / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from causal2vec.e import E\nelse:\n    import json\n"
    )
    (package / "e.py").write_text("from causal2vec import d\nclass E: ...\n")
    graph = module_graph(package)
    assert graph["causal2vec/b.py"] == {"causal2vec/sub/c.py"} and graph["causal2vec/d.py"] == set()
    assert graph["causal2vec/e.py"] == {"causal2vec/d.py"} and graph["causal2vec/__init__.py"] == {"causal2vec/a.py"}
    assert find_cycle(graph) == ["causal2vec/a.py", "causal2vec/b.py", "causal2vec/sub/c.py", "causal2vec/a.py"]
    (package / "sub" / "c.py").write_text("")
    assert find_cycle(module_graph(package)) == []


def test_library_modules_import_each_other_in_no_circle():
    cycle = find_cycle(module_graph(LIBRARY))
    assert not cycle, f"causal2vec's modules import each other in a circle: {' -> '.join(cycle)}"


# ---------------------------------------------------------------- durable files have one home

DURABLE_FILE_HELPERS = {
    "fsync_dir",
    "replace_dir",
    "remove_stale_siblings",
    "write_atomic",
    "member_path",
    "entry_names",
    "file_checksum",
    "verify_checksum",
    "read_json_object",
}


def top_level_functions(path: Path) -> set[str]:
    """The names of the functions a file defines at module level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_durable_file_helpers_are_defined_in_files_py_only():
    defined = {path.relative_to(ROOT).as_posix(): top_level_functions(path) for path in LIBRARY.rglob("*.py")}
    assert defined.pop("causal2vec/files.py") >= DURABLE_FILE_HELPERS
    elsewhere = {name: found for name, names in defined.items() if (found := names & DURABLE_FILE_HELPERS)}
    assert not elsewhere, f"durable-file helpers belong in causal2vec/files.py; also defined in {elsewhere}"


def test_runtime_hands_on_no_durable_file_helper():
    """runtime.py keeps devices, dtypes, progress and optional imports: it neither defines nor re-exports them."""
    tree = ast.parse((LIBRARY / "runtime.py").read_text(encoding="utf-8"))
    names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert not (names | top_level_functions(LIBRARY / "runtime.py")) & DURABLE_FILE_HELPERS


# ---------------------------------------------------------------------- short functions

MAX_FUNCTION_LINES = 40  # a library function, from its ``def`` to the end of the body, docstring included
LONG_FUNCTIONS_ALLOWED: set[str] = set()  # library functions allowed past MAX_FUNCTION_LINES: none


def function_lengths(package: Path) -> dict[str, int]:
    """``{"causal2vec/x.py::Class.method": lines}`` for every function and method under ``package``, nested ones
    included (``outer.inner``); a function's lines run from its ``def`` to the end of its body."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str, file: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                lengths[f"{file}::{name}"] = child.end_lineno - child.lineno + 1
                visit(child, name + ".", file)
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".", file)
            else:
                visit(child, prefix, file)

    for path in sorted(package.rglob("*.py")):
        visit(ast.parse(path.read_text(encoding="utf-8")), "", path.relative_to(package.parent).as_posix())
    return lengths


def test_the_length_scanner_sees_methods_nested_functions_and_docstrings(tmp_path):
    package = tmp_path / "causal2vec"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(3))
    (package / "a.py").write_text(
        f'@decorated\ndef f():\n    """Doc\n\n    more.\n    """\n{body}\n\n'
        f"class C:\n    async def m(self):\n        def inner():\n            return 1\n        return inner\n"
    )
    assert function_lengths(package) == {"causal2vec/a.py::f": 8, "causal2vec/a.py::C.m": 4,
                                         "causal2vec/a.py::C.m.inner": 2}  # fmt: skip


def test_no_library_function_is_longer_than_40_lines():
    lengths = function_lengths(LIBRARY)
    long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS_ALLOWED}
    assert not long, f"split these into functions of at most {MAX_FUNCTION_LINES} lines: {long}"
    assert set(lengths) >= LONG_FUNCTIONS_ALLOWED, f"no such function: {LONG_FUNCTIONS_ALLOWED - set(lengths)}"
