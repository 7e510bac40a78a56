"""The one error policy and help style of the five command lines (causal2vec.cli_support), checked in-process on
each ``main``: its handler is replaced by one that raises, so no model loads."""

from __future__ import annotations

import argparse
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import pytest

from causal2vec import cli as causal2vec_cli
from causal2vec.cli_support import (
    CommandFailed,
    CommandParser,
    UsageError,
    add_encoding_options,
    add_model_options,
    run_main,
)
from causal2vec.search import IndexBusyError
from eval import cli as eval_cli
from export import cli as export_cli
from training import cli as training_cli
from training.data import cli as data_cli


@dataclass(frozen=True)
class Cli:
    """One of the five commands: its module, the handler its ``main`` runs, arguments that parse, what it prints."""

    module: ModuleType
    handler: str  # the module attribute that main ends up calling
    argv: list[str]
    prog: str  # how its error lines start
    unchanged: str  # what its error lines say was left as it was ("" if nothing)
    help_argv: list[str]
    shown_default: str  # a piece of that help

    def main(self, *extra: str) -> int:
        return self.module.main([*self.argv, *extra])


CLIS = [
    Cli(causal2vec_cli, "cmd_encode", ["encode", "texts.txt", "-o", "emb.npy"], "causal2vec encode",
        "; emb.npy was not created", ["encode", "--help"], "texts per forward pass, e.g. 16 (default: 32)"),
    Cli(training_cli, "run", ["--config", "run.yaml"], "python -m training", "", ["--help"],
        "override output.dir, e.g. runs/my-run (default: the config's)"),
    Cli(data_cli, "run", ["bbc", "--output", "pairs.jsonl"], "python -m training.data", "", ["bbc", "--help"],
        "cut bodies to this many characters (default: 1000)"),
    Cli(export_cli, "run", ["--model", "default", "--output", "onnx"], "python -m export", "", ["--help"],
        "(default: 23, whose fused attention"),
    Cli(eval_cli, "run", ["--model", "default", "--tasks", "BBCNewsRetrieval", "--output", "runs"], "python -m eval",
        "", ["--help"], "run Causal2Vec with torch or onnx (default: torch)"),
]  # fmt: skip


@pytest.fixture(params=CLIS, ids=lambda cli: cli.prog)
def cli(request, tmp_path, monkeypatch) -> Cli:
    monkeypatch.chdir(tmp_path)  # causal2vec says whether its output existed: none does here
    monkeypatch.setenv("COLUMNS", "200")  # help lines unwrapped
    return request.param


def raise_from_handler(monkeypatch, cli: Cli, error: BaseException) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli.module, cli.handler, handler)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), f"expected one line on stderr, got {err!r}"
    return err.rstrip("\n")


def test_a_usage_error_exits_2_in_one_error_line(cli, monkeypatch, capsys):
    monkeypatch.setattr(cli.module, cli.handler, lambda args: pytest.fail("the command ran"))
    assert cli.main("--no-such-option") == 2
    err = one_line(capsys)
    assert ": error: unrecognized arguments: --no-such-option (see " in err and err.endswith(" --help)"), err


@pytest.mark.parametrize("error", [UsageError("--cap 0: give 1 or more"), ValueError("--cap 0: give 1 or more")])
def test_the_commands_own_usage_errors_exit_2(cli, monkeypatch, capsys, error):
    raise_from_handler(monkeypatch, cli, error)
    assert cli.main() == 2
    assert one_line(capsys) == f"{cli.prog}: error: --cap 0: give 1 or more"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "in.jsonl"), "in.jsonl: No such file or directory"),
        (FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), "out"), "out: File exists"),
        (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "out"), "out: Permission denied"),
        (FileNotFoundError("training config run.yaml does not exist"), "training config run.yaml does not exist"),
        (IndexBusyError("news.idx is being written by process 7"), "news.idx is being written by process 7"),
    ],
)
def test_file_errors_exit_2_naming_the_file(cli, monkeypatch, capsys, error, message):
    raise_from_handler(monkeypatch, cli, error)
    assert cli.main() == 2
    assert one_line(capsys) == f"{cli.prog}: error: {message}"


def test_a_full_disk_exits_2_naming_the_file_and_what_was_kept(cli, monkeypatch, capsys):
    raise_from_handler(monkeypatch, cli, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/model.onnx"))
    assert cli.main() == 2
    assert one_line(capsys) == (
        f"{cli.prog}: error: no space left on the device while writing out/model.onnx{cli.unchanged}. Free some "
        "space and run the command again"
    )


def test_ctrl_c_exits_130_in_one_line(cli, monkeypatch, capsys):
    raise_from_handler(monkeypatch, cli, KeyboardInterrupt())
    assert cli.main() == 130
    assert one_line(capsys) == f"{cli.prog}: interrupted{cli.unchanged}"


def test_a_failed_result_exits_1(cli, monkeypatch, capsys):
    raise_from_handler(monkeypatch, cli, CommandFailed("the fp16 graph does not match torch; it was not written"))
    assert cli.main() == 1
    assert one_line(capsys) == f"{cli.prog}: error: the fp16 graph does not match torch; it was not written"


def test_a_missing_package_exits_2_only_with_its_install_command(cli, monkeypatch, capsys):
    raise_from_handler(monkeypatch, cli, ModuleNotFoundError("this needs faiss; run: pip install 'causal2vec[search]'"))
    assert cli.main() == 2
    assert one_line(capsys).endswith("run: pip install 'causal2vec[search]'")
    raise_from_handler(monkeypatch, cli, ModuleNotFoundError("No module named 'causal2vec.gone'"))
    with pytest.raises(ModuleNotFoundError):
        cli.main()


@pytest.mark.parametrize("bug", [TypeError("internal"), KeyError("internal"), RuntimeError("internal")])
def test_a_bug_keeps_its_traceback(cli, monkeypatch, bug):
    raise_from_handler(monkeypatch, cli, bug)
    with pytest.raises(type(bug)):
        cli.main()


def test_help_exits_0_and_shows_defaults(cli, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.module.main(cli.help_argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert cli.shown_default in out, out


# ---------------------------------------------------------------------- the helpers themselves


def test_help_shows_a_default_only_where_it_says_something(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    parser = CommandParser(prog="tool")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--name", help="a name")
    parser.add_argument("--flag", action="store_true", help="a flag")
    parser.add_argument("--model", default="default", help="a model (default: the index's)")
    parser.add_argument("--fields", nargs="+", default=[], help="fields")
    help_text = parser.format_help()
    assert "seed of the draw (default: 0)" in help_text
    for line in ("a name\n", "a flag\n", "a model (default: the index's)\n", "fields\n"):
        assert line in help_text, help_text


def test_subcommands_share_the_parser_class_and_formatter(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    parser = CommandParser(prog="tool")
    sub = parser.add_subparsers(dest="command").add_parser("go")
    sub.add_argument("--k", type=int, default=10, help="hits")
    assert isinstance(sub, CommandParser)
    assert "hits (default: 10)" in sub.format_help()


def test_run_main_runs_the_handler_and_returns_its_code():
    def build() -> argparse.ArgumentParser:
        parser = CommandParser(prog="tool")
        add_model_options(parser, model_default="default", model_help="m", dtype_auto="float32", max_length="t")
        add_encoding_options(parser, instruction=True)
        return parser

    seen: list[argparse.Namespace] = []
    handler: Callable[[argparse.Namespace], int] = lambda args: seen.append(args) or 3  # noqa: E731
    assert run_main(build, handler, ["--batch-size", "8", "-q", "--dtype", "float32"]) == 3
    (args,) = seen
    assert (args.model, args.batch_size, args.quiet, args.dtype, args.instruction) == (
        "default",
        8,
        True,
        "float32",
        None,
    )
    assert run_main(build(), handler, ["--batch-size", "0"]) == 2


@pytest.mark.parametrize(
    ("module", "argv"),
    [(export_cli, ["--model", "m", "--output", "o"]), (eval_cli, ["--model", "m", "--tasks", "t", "--output", "o"])],
)
def test_the_long_repo_tools_show_progress_unless_quiet(module, argv):
    """python -m export and python -m eval log their progress by default (their steps take minutes); -q silences."""
    parser = module.build_parser()
    assert parser.parse_args(argv).verbose is True
    assert parser.parse_args([*argv, "-v"]).verbose is True
    assert parser.parse_args([*argv, "-q"]).verbose is False
    assert training_cli.build_parser().parse_args(["--config", "c.yaml"]).verbose is False  # the others: with -v
