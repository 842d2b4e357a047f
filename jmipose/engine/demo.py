"""jmipose demo: the main job on the embedded default (synthetic PoseTrack-format videos).

Builds the synthetic video dataset, trains the single-frame baseline and JM-Pose on it, evaluates
both with PoseTrack AP and writes a report.  Until the data, model and engine are in, it says what
it will do and exits with a non-zero status, so nobody mistakes it for a result.
"""

from __future__ import annotations

import argparse

PLAN = """jmipose demo will:
  1. generate the synthetic PoseTrack18-format video benchmark (jmipose.data.synthetic)
  2. train the single-frame baseline (tiny HRNet) on it
  3. freeze that backbone and train the JM-Pose head on top (temporal context)
  4. evaluate both with PoseTrack per-joint AP (poseval's algorithm) on easy and hard frames
  5. write OUT/results.json, a Markdown report, training curves and an annotated video
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke version")
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> int:
    print(PLAN)
    print("not implemented yet: the data, model and engine pieces are still being built")
    return 2
