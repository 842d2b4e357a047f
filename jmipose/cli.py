"""The ``jmipose`` command line.  Every subcommand is also a Python function.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``; the table below maps names to modules, imported only when used, so
``jmipose --help`` and ``jmipose info`` stay fast.

One error contract for every command (:func:`run_command`): a user's mistake (a config value, a data
file, a checkpoint, a memory limit, a path that cannot be read or written; see :func:`is_user_error`)
ends with one line ``jmipose <command>: <what is wrong>`` on stderr and exit code 2, as does a usage
error (an unknown option, a bad value of a typed option).  ``--debug`` (before or after the command)
or ``JMIPOSE_DEBUG=1`` also prints the traceback.  Anything else is a bug of jmipose and keeps Python's
traceback.  Ctrl-C ends with ``interrupted`` and exit code 130.  Positionals and options may be mixed
in any order (``jmipose train cfg.yaml --output-dir x train.epochs=1``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("jmipose.info", "show versions, live backends and build flags"),
    "demo": ("jmipose.engine.demo", "the main job: synthetic videos, baseline vs JM-Pose, AP report"),
    "train": ("jmipose.engine.train", "train a model from a YAML config (resumable, DDP via torchrun)"),
    "eval": ("jmipose.engine.evaluate", "evaluate a checkpoint: predictions JSON + PoseTrack AP"),
    "eval-ap": ("jmipose.metrics.posetrack_ap", "PoseTrack per-joint AP of prediction files (as poseval)"),
    "predict": ("jmipose.engine.predict", "poses on a video: annotated mp4 + PoseTrack JSON, frames/s"),
    "bench": ("jmipose.bench.cli", "benchmark the ops and the model vs eager, torch.compile, torchvision, SDPA"),
}

DEBUG_ENV = "JMIPOSE_DEBUG"
USAGE_ERROR = 2      # exit code of a user's mistake (argparse uses 2 for usage errors too)
INTERRUPTED = 130    # 128 + SIGINT, as shells report it
BROKEN_PIPE = 141    # 128 + SIGPIPE: the reader of stdout left (`jmipose ... | head`)


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (the option at fault and where to read the options)."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _add_debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=f"on an error, also print the traceback (or set {DEBUG_ENV}=1)")


def build_parser() -> argparse.ArgumentParser:
    from jmipose import __version__

    parser = _Parser(prog="jmipose", description="Fast video human pose estimation (JM-Pose).")
    parser.add_argument("--version", action="version", version=f"jmipose {__version__}")
    _add_debug(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0])
        module.add_arguments(cmd)
        _add_debug(cmd)
        cmd.set_defaults(_module=module)
    return parser


# ----- the error contract -----

def _user_error_types() -> tuple[type[BaseException], ...]:
    """The library's error types that always mean "the input is wrong", never a bug."""
    from jmipose.checkpoint import CheckpointError, StateDictMismatchError
    from jmipose.config import ConfigError
    from jmipose.formats.errors import DataError
    from jmipose.data.workers import WorkerDiedError
    from jmipose.metrics.posetrack_ap import PredictionCheckError
    from jmipose.resources import ResourceLimitError

    return (ConfigError, DataError, CheckpointError, StateDictMismatchError, PredictionCheckError,
            ResourceLimitError, WorkerDiedError, OSError)


def _raised_by_jmipose(error: BaseException) -> bool:
    """True when the innermost frame of ``error``'s traceback is jmipose's own code (a deliberate
    check), False when it comes from inside another library (an input that no check caught: a bug)."""
    tb = error.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] == "jmipose"


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a user's mistake (one line, exit 2) rather than a bug (a traceback).

    User errors: :class:`jmipose.config.ConfigError`, :class:`jmipose.formats.errors.DataError`,
    :class:`jmipose.checkpoint.CheckpointError` and ``StateDictMismatchError``,
    :class:`jmipose.metrics.posetrack_ap.PredictionCheckError`, :class:`jmipose.resources.ResourceLimitError`,
    :class:`jmipose.data.workers.WorkerDiedError` (a DataLoader worker killed, e.g. by the OOM killer),
    ``OSError`` (a path that cannot be read or written, a full disk, a run lock held by another
    process), and a ``ValueError`` or ``FloatingPointError`` raised by jmipose's own argument checks
    (``FloatingPointError``: a training loss that is no longer finite).
    A ``ValueError`` raised inside numpy, torch or another library means an input that no check of
    ours caught, and keeps its traceback (please report it)."""
    if isinstance(error, _user_error_types()):
        return True
    return isinstance(error, (ValueError, FloatingPointError)) and _raised_by_jmipose(error)


def error_line(error: BaseException) -> str:
    """The message of a user error, without Python's ``[Errno N]`` decoration."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror}"
        if error.filename2 is not None:
            text += f" ({error.filename2})"
        return text
    return str(error).strip() or type(error).__name__


def run_command(name: str, function, args: argparse.Namespace, debug: bool = False) -> int:
    """``function(args)`` under the error contract of the module docstring; its exit code."""
    debug = debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
    try:
        code = int(function(args) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `jmipose ... | head`: the reader left; stop quietly, as other command-line tools do (the rest
        # of stdout goes nowhere, so Python's exit-time flush cannot raise again)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"jmipose {name}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:  # noqa: BLE001 - sorted below: user errors end in one line, bugs re-raise
        if not is_user_error(error):
            raise
        if debug:
            traceback.print_exc()
        print(f"jmipose {name}: {error_line(error)}", file=sys.stderr)
        return USAGE_ERROR


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] == "--debug":  # `jmipose --debug train ...`
        debug = True
        argv.pop(0)
    # Import only the chosen subcommand's module where possible (fast --help of one command).
    if argv and argv[0] in COMMANDS:
        name = argv[0]
        module_name, help_text = COMMANDS[name]
        module = importlib.import_module(module_name)
        parser = _Parser(prog=f"jmipose {name}", description=help_text)
        module.add_arguments(parser)
        _add_debug(parser)
        args = _parse(parser.parse_intermixed_args, argv[1:])
        if isinstance(args, int):
            return args
        return run_command(name, module.main, args, debug or bool(getattr(args, "debug", False)))
    args = _parse(build_parser().parse_args, argv)
    if isinstance(args, int):
        return args
    return run_command(args.command, args._module.main, args, debug or bool(getattr(args, "debug", False)))


def _parse(parse, argv: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code of ``--help``, ``--version`` or a usage error (returned,
    so that ``main()`` called in-process answers with a code as it does for every other error)."""
    try:
        return parse(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else USAGE_ERROR)


if __name__ == "__main__":
    sys.exit(main())
