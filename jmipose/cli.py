"""The ``jmipose`` command line.  Every subcommand is also a Python function.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``main(args) -> int``; the table below maps names to modules, imported only when used, so
``jmipose --help`` and ``jmipose info`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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


def build_parser() -> argparse.ArgumentParser:
    from jmipose import __version__

    parser = argparse.ArgumentParser(prog="jmipose", description="Fast video human pose estimation (JM-Pose).")
    parser.add_argument("--version", action="version", version=f"jmipose {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0])
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the chosen subcommand's module where possible (fast --help of one command).
    if argv and argv[0] in COMMANDS:

        module_name, help_text = COMMANDS[argv[0]]
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"jmipose {argv[0]}", description=help_text)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        return int(module.main(args) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args._module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
