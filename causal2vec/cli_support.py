"""What the five command lines share: one parser class, one way to run ``main``, the encoding options.

The commands are ``causal2vec`` (:mod:`causal2vec.cli`), ``python -m training``, ``python -m training.data``,
``python -m export`` and ``python -m eval``. Each builds a :class:`CommandParser` and its ``main(argv)`` is
``run_main(build_parser, handler, argv)``; tests call ``main`` with a list and read the code it returns.

Exit status and stderr, the same for every command:

- **0**: done. ``--help`` prints the help (with each option's default) and exits 0 through ``SystemExit``, as
  argparse does.
- **1**: the command ran, and its result is a failure it reports (an export that does not match torch, raised as
  :class:`CommandFailed`, is not written; an evaluation returns 1 when a task could not run).
- **2**: a bad input, in one line ``PROG: error: MESSAGE`` on stderr. That is a usage error argparse finds (an
  unknown flag, a bad value), a :class:`UsageError`, and the library's errors about what the user gave:
  ``ValueError`` (a bad config value, a malformed file), ``OSError`` (a missing, existing or unreadable file, a full
  disk), a busy index, a ``ModuleNotFoundError`` that names its ``pip install``, SQLite's "disk is full". An
  ``OSError`` is described by its file and reason; a full disk also says what was left as it was.
- **130**: Ctrl-C, in one line ``PROG: interrupted`` (and what was left as it was), as shells report SIGINT.

Any other exception is a bug and keeps its traceback; so is a ``ModuleNotFoundError`` without an install command
(a broken installation) and any other SQLite error.

``PROG`` is the parser's ``prog`` (``python -m training.data``); a command whose messages depend on the run passes an
``invocation`` hook: ``causal2vec`` names its subcommand and what it leaves unchanged (``causal2vec encode:
interrupted; emb.npy is unchanged``). Before this module each command had its own ``main``: argparse errors raised
``SystemExit(2)`` from all but ``causal2vec``, which returned 2; only ``ValueError`` and ``FileNotFoundError`` (and
sometimes ``ModuleNotFoundError``) were reported by the others, and Ctrl-C printed a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, get_args

from causal2vec.search import IndexBusyError

FAILED = 1  # the command ran and reports a failed result
USAGE = 2  # a bad input: the command line, a file, a value
INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it

DTypeOption = Literal["auto", "float32", "bfloat16", "float16"]  # --dtype; auto: see causal2vec.runtime.auto_dtype
LOG_FORMAT = "%(levelname)s %(message)s"


class UsageError(Exception):
    """A bad command-line input; :func:`run_main` reports it in one line and exits with status 2."""


class CommandFailed(Exception):
    """The command ran and its result failed (e.g. an export that does not match torch); exits with status 1."""


# ---------------------------------------------------------------------- argparse types


def positive_int(value: str) -> int:
    """An argparse ``type`` for counts and sizes (``--batch-size 32``, ``-k 10``): a whole number of 1 or more.

    Raises:
        argparse.ArgumentTypeError: Naming the value; argparse adds the flag.
    """
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer; give a whole number of 1 or more")
    return number


def port_number(value: str) -> int:
    """An argparse ``type`` for ``--port``: a TCP port from 0 (any free port) to 65535.

    Raises:
        argparse.ArgumentTypeError: Naming the value and the range; argparse adds the flag.
    """
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port; give a whole number from 0 to 65535")
    return number


def positive_float(value: str) -> float:
    """An argparse ``type`` for durations (``--timeout 2.5``): a number above 0.

    Raises:
        argparse.ArgumentTypeError: Naming the value; argparse adds the flag.
    """
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:  # also false for nan
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number; give e.g. 30 or 2.5")
    return number


# ---------------------------------------------------------------------- the parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that ends each option with ``(default: VALUE)``, and keeps descriptions and epilogs as written.

    The default is left out where it says nothing (``None``, a flag's ``False``, an empty list) and where the help
    already describes it (it holds ``(default``, e.g. ``(default: the model's)``).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default" in (action.help or "") or not _worth_showing(action.default):
            return action.help
        return super()._get_help_string(action)


def _worth_showing(default: object) -> bool:
    """Whether a default tells the reader something: not ``None``, a flag's ``True``/``False``, an empty list."""
    return not (default is None or isinstance(default, bool) or (isinstance(default, list | tuple) and not default))


class CommandParser(argparse.ArgumentParser):
    """The parser of every command: :class:`HelpFormatter` by default, and usage errors in one line.

    Subcommand parsers are of the same class (argparse builds them with ``type(parent)``), so they share both.
    """

    def __init__(self, *args: Any, formatter_class: type[argparse.HelpFormatter] = HelpFormatter, **kwargs: Any):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 after one line, ``PROG: error: MESSAGE (see PROG --help)``."""
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def choices_of(literal: Any) -> list[str]:
    """The values of a ``typing.Literal``, as an argparse ``choices`` list: the one list of allowed values."""
    return list(get_args(literal))


# ---------------------------------------------------------------------- options shared by several commands


def add_verbose_option(
    parser: argparse.ArgumentParser, help_text: str = "log at INFO level", *, progress_by_default: bool = False
) -> None:
    """``-v``/``--verbose``: :func:`run_main` logs at INFO when it is set, else at WARNING.

    A command whose steps take minutes shows its progress by default (``progress_by_default``): it logs at INFO
    unless ``-q``/``--quiet`` asks for warnings only, and takes ``-v`` too, as a no-op, for scripts that pass it.
    """
    parser.add_argument("-v", "--verbose", action="store_true", help=help_text)
    if progress_by_default:
        parser.add_argument("-q", "--quiet", dest="verbose", action="store_false", help="log warnings only")
        parser.set_defaults(verbose=True)


def add_device_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, dtype_auto: str) -> None:
    """``--device`` and ``--dtype``: where the model runs and in which weight dtype (``dtype_auto``: what auto is)."""
    parser.add_argument(
        "--device", help="where the model runs, e.g. cpu, cuda or cuda:1 (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=choices_of(DTypeOption),
        help=f"weight dtype, e.g. bfloat16; auto = {dtype_auto}",
    )


def add_model_options(
    parser: argparse.ArgumentParser, *, model_default: str | None, model_help: str, dtype_auto: str, max_length: str
) -> argparse._ArgumentGroup:
    """The "model" group: ``--model``, ``--device``, ``--dtype``, ``--max-length``; returned for more options."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=model_default, help=model_help)
    add_device_options(group, dtype_auto=dtype_auto)
    group.add_argument("--max-length", type=positive_int, metavar="TOKENS", help=max_length)
    return group


def add_encoding_options(
    parser: argparse.ArgumentParser, *, batch_size: int = 32, instruction: bool = False, progress: bool = True
) -> argparse._ArgumentGroup:
    """The "encoding" group: ``--batch-size``, and ``--instruction`` and ``-q``/``--quiet`` where asked for."""
    group = parser.add_argument_group("encoding")
    group.add_argument("--batch-size", type=positive_int, default=batch_size, help="texts per forward pass, e.g. 16")
    if instruction:
        group.add_argument(
            "--instruction",
            help="instruction to use instead of the model's query instruction, "
            "e.g. 'Given a question, retrieve news articles about it'",
        )
    if progress:
        group.add_argument("-q", "--quiet", action="store_true", help="no progress bar, e.g. when output goes to a log")
    return group


# ---------------------------------------------------------------------- running main


@dataclass(frozen=True)
class Invocation:
    """How the error lines of one run start, and what they say a stopped run left as it was."""

    prog: str  # the start of every line, e.g. "causal2vec encode"
    unchanged: str | None = None  # e.g. "emb.npy is unchanged"; None where the command cannot tell

    def interrupted(self) -> str:
        """The line for Ctrl-C."""
        return f"{self.prog}: interrupted" + (f"; {self.unchanged}" if self.unchanged else "")

    def error(self, err: BaseException) -> str:
        """The line for a user error (see :func:`describe`)."""
        return f"{self.prog}: error: {describe(err, self.unchanged)}"


Handler = Callable[[argparse.Namespace], int]

# The errors that may describe the user's input rather than a bug; is_user_error makes the finer cut.
USER_ERRORS = (UsageError, ValueError, OSError, IndexBusyError, ModuleNotFoundError, sqlite3.OperationalError)


def run_main(
    parser: argparse.ArgumentParser | Callable[[], argparse.ArgumentParser],
    handler: Handler,
    argv: Sequence[str] | None = None,
    *,
    invocation: Callable[[argparse.Namespace], Invocation] | None = None,
) -> int:
    """Parse ``argv``, set up logging (``--verbose``), run ``handler`` and map what it raises to an exit status.

    Args:
        parser: The command's parser, or the function that builds it.
        handler: Runs the parsed command and returns its exit status.
        argv: The arguments (``None``: ``sys.argv[1:]``).
        invocation: Builds the :class:`Invocation` of a run before the handler starts (default: the parser's prog).

    Returns:
        The exit status, per the policy of this module.

    Raises:
        SystemExit: For ``--help`` (status 0).
        BaseException: Any error that is not the user's: a bug keeps its traceback.
    """
    parser = parser if isinstance(parser, argparse.ArgumentParser) else parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed the error; --help (status 0) still exits
        if not exit_.code:
            raise
        return exit_.code if isinstance(exit_.code, int) else USAGE
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING, format=LOG_FORMAT)
    run = invocation(args) if invocation is not None else Invocation(parser.prog)
    return _run_handler(handler, args, run)


def _run_handler(handler: Handler, args: argparse.Namespace, run: Invocation) -> int:
    try:
        return handler(args)
    except KeyboardInterrupt:
        print(run.interrupted(), file=sys.stderr)
        return INTERRUPTED
    except CommandFailed as err:
        print(f"{run.prog}: error: {err}", file=sys.stderr)
        return FAILED
    except USER_ERRORS as err:
        if not is_user_error(err):
            raise
        print(run.error(err), file=sys.stderr)
        return USAGE


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is reported in one line: a missing package only with its install hint, SQLite only if full."""
    if isinstance(err, ModuleNotFoundError):
        return "pip install" in str(err)
    if isinstance(err, sqlite3.OperationalError):
        return is_disk_full(err)
    return isinstance(err, USER_ERRORS)


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is a full disk: ``ENOSPC``, or SQLite's ``SQLITE_FULL``."""
    if isinstance(err, sqlite3.OperationalError):
        return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(err, OSError) and err.errno == errno.ENOSPC


def describe(err: BaseException, unchanged: str | None = None) -> str:
    """One line for a user error: a full disk names the file and what was kept; an OSError names its file.

    Args:
        err: The error.
        unchanged: What the command left as it was, e.g. ``"news.idx is unchanged"``, if it can tell.
    """
    if is_disk_full(err):
        where = f" while writing {err.filename}" if getattr(err, "filename", None) else ""
        kept = f"; {unchanged}" if unchanged else ""
        return f"no space left on the device{where}{kept}. Free some space and run the command again"
    if isinstance(err, OSError) and err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)
