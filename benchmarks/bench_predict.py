"""Video inference speed: frames per second of ``jmipose.Inferencer`` on a synthetic video, for the
tiny and W48 models, with and without per-frame feature reuse, compiled ops vs eager reference ops.

    python benchmarks/bench_predict.py --threads 2
    python benchmarks/bench_predict.py --models w48 --frames 8 --device cuda --json predict.json

Each row runs the whole inference loop (frame decoding in a background thread, crops, backbone, head,
DARK decoding, tracking) over the video once after one warm-up pass over its first frames; mp4 and
JSON writing are left out.  Models have random weights (speed does not depend on them).  ``reuse``
computes each crop's backbone output once and reuses it in the five windows holding the frame;
``naive`` runs the full model per window (five backbone passes per frame and person).  Boxes: the
ground-truth person boxes of the synthetic video given as detections (people move, so the crop-box
holding of the Inferencer decides how often a frame is reused), or the whole frame (``--boxes whole``).
On a shared machine the numbers are provisional.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

MODELS = {
    # the demo's JM-Pose head on the tiny HRNet, at the demo's input size
    "tiny": ({"variant": "jm", "backbone": "tiny", "channels": 32, "num_blocks": 2, "attention_pool": 2,
              "heatmap_residual": True}, (64, 96)),
    # the paper's configuration: JMI on HRNet-W48 at 288x384
    "w48": ({"variant": "jmi", "backbone": "w48"}, (288, 384)),
}


def run_row(name: str, video, detections, reuse: bool, backend: str | None, batch_size: int,
            device: str) -> dict:
    from jmipose.engine.inferencer import Inferencer
    from jmipose.models import build_model

    config, input_size = MODELS[name]
    torch.manual_seed(0)
    # speed only: a frozen backbone keeps its random weights on purpose
    model = build_model({**config, "use_kernels": backend is None, "allow_random_backbone": True})
    infer = Inferencer(model, device=device, backend=backend, batch_size=batch_size, input_size=input_size,
                       reuse_features=reuse)
    warm = iter(infer(video.path, detections=detections, detection_threshold=0.0))
    next(warm)   # first window (model warm-up, lazy library loads)
    warm.close()
    infer.backbone_passes = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    results = list(infer(video.path, detections=detections, detection_threshold=0.0))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    people = sum(len(r) for r in results)
    return {"model": name, "input": f"{input_size[0]}x{input_size[1]}", "reuse": reuse,
            "ops": "reference" if backend else "compiled", "frames": len(results), "people": people,
            "backbone_passes": infer.backbone_passes, "seconds": round(seconds, 3),
            "fps": round(len(results) / seconds, 2), "cpu_seconds": round(cpu_seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,w48")
    parser.add_argument("--frames", type=int, default=12, help="frames of the synthetic video")
    parser.add_argument("--people", type=int, default=1)
    parser.add_argument("--size", type=int, nargs=2, default=(384, 288), metavar=("W", "H"))
    parser.add_argument("--boxes", default="gt", choices=("gt", "whole"))
    parser.add_argument("--ops", default="compiled,reference", help="compiled, reference or both")
    parser.add_argument("--reuse", default="on,off", help="on, off or both")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from jmipose.data.synthetic import synthetic_video

    with tempfile.TemporaryDirectory() as folder:
        video = synthetic_video(Path(folder) / "bench.mp4", frames=args.frames, size=tuple(args.size), seed=1,
                                people=args.people, hard_fraction=0.0)
        detections = None
        if args.boxes == "gt":
            detections = [{"frame_index": t, "bbox": p["bbox"], "score": 1.0}
                          for t, people in enumerate(video.people) for p in people]
        rows = []
        print("| model | input | ops | reuse | frames | people | backbone crops | seconds | frames/s |",
              flush=True)
        print("|---|---|---|---|---:|---:|---:|---:|---:|", flush=True)
        for name in args.models.split(","):
            for ops in args.ops.split(","):
                for reuse in args.reuse.split(","):
                    backend = None if ops == "compiled" else "reference"
                    row = run_row(name, video, detections, reuse == "on", backend, args.batch_size,
                                  args.device)
                    rows.append(row)
                    print(f"| {row['model']} | {row['input']} | {row['ops']} | "
                          f"{'yes' if row['reuse'] else 'no'} | {row['frames']} | {row['people']} | "
                          f"{row['backbone_passes']} | {row['seconds']:.2f} | {row['fps']:.2f} |", flush=True)
    info = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "boxes": args.boxes, "rows": rows}
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
