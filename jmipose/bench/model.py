"""Model-level benchmark cases: frames per second of the JM-Pose head and of the whole model, and
one training step (time and peak memory).

Three ways to run the same weights side by side: ``kernels`` (``use_kernels=True``: the ops'
default compiled backends; baseline ``none``), ``reference`` eager (``use_kernels=False``; baseline
``eager``) and ``torch.compile`` of the eager model (baseline ``compile``).

- ``head``, fwd: the temporal half (``forward_head``) on backbone outputs computed once, inference.
- ``model``, fwd: the whole model (backbone on every frame of the window + head), inference.
- ``model``, fwd+bwd: one training step of the paper's setting (frozen backbone, head forward and backward of the
  heatmap MSE plus the weighted auxiliary loss); its ``peak_mem_bytes`` is the step's peak memory.

Records carry ``fps`` = windows per second (batch / median time).  On the CPU, cases whose forward
FLOPs exceed a budget are skipped with the estimate (W48 at batch 32 takes minutes per call there).
"""

from __future__ import annotations

from typing import Any

import torch

from jmipose.bench.timing import Case

OP = "model"
CONFIG_VARIANT = "jm"  # JM-Pose (ACM MM): one branch, L = 4 interaction blocks
INPUT_SIZE = (384, 288)
QUICK_INPUT_SIZE = (128, 96)  # --quick: attention over N = 768 tokens instead of 6,912
SMALLEST_INPUT_SIZE = (64, 64)  # multiples of 32 (HRNet)
WAYS = (("kernels", "none"), ("reference", "eager"), ("reference", "compile"))


def configurations(quick: bool = False, smallest: bool = False) -> list[dict[str, Any]]:
    """(backbone, batch, input size) of the benchmarked model configurations."""
    if smallest:
        height, width = SMALLEST_INPUT_SIZE
        return [{"backbone": "tiny", "batch": 1, "height": height, "width": width}]
    if quick:
        return [{"backbone": "tiny", "batch": 1, "height": QUICK_INPUT_SIZE[0], "width": QUICK_INPUT_SIZE[1]}]
    return [{"backbone": b, "batch": n, "height": INPUT_SIZE[0], "width": INPUT_SIZE[1]}
            for b in ("tiny", "w48") for n in (1, 32)]


def forward_flops(config: dict[str, Any]) -> dict[str, float]:
    """Forward FLOPs of the head and of the whole model at this configuration (``describe``)."""
    from jmipose.models import describe

    info = describe({"variant": CONFIG_VARIANT, "backbone": config["backbone"]},
                    (config["height"], config["width"]), config["batch"])
    return {"head": float(info["head_flops"]), "model": float(info["flops"])}


class ModelRunner:
    """One head forward, model forward or training step on inputs built once."""

    def __init__(self, config: dict[str, Any], part: str, pass_: str, use_kernels: bool, compiled: bool,
                 device: str) -> None:
        from jmipose.models import build_model

        torch.manual_seed(0)
        dev = torch.device(device)
        # speed only: the frozen backbone keeps its random weights on purpose
        self.model = build_model({"variant": CONFIG_VARIANT, "backbone": config["backbone"],
                                  "use_kernels": use_kernels, "allow_random_backbone": True}).to(dev)
        self.training = pass_ == "fwd+bwd"
        self.model.train(self.training)
        frames_per_window = self.model.config.num_frames
        gen = torch.Generator().manual_seed(0)
        self.frames = torch.randn(config["batch"], frames_per_window, 3, config["height"], config["width"],
                                  generator=gen).to(dev)
        self.target = torch.rand(config["batch"], self.model.config.num_joints, config["height"] // 4,
                                 config["width"] // 4, generator=gen).to(dev)
        self.part = part
        if part == "head":
            with torch.no_grad():
                heatmaps, features = self.model.backbone_features(self.frames.flatten(0, 1))
            windows = (config["batch"], frames_per_window)
            self.head_inputs = (heatmaps.unflatten(0, windows),
                                [None if f is None else f.unflatten(0, windows) for f in features])
            self.fn = self.model.forward_head
        else:
            self.fn = self.model
        if compiled:
            torch._dynamo.reset()  # one compiled model per group: never hit dynamo's recompile limit
            self.fn = torch.compile(self.fn, dynamic=False)

    def reset(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def __call__(self):
        from jmipose.models import pose_loss

        inputs = self.head_inputs if self.part == "head" else (self.frames,)
        if not self.training:
            with torch.no_grad():
                return self.fn(*inputs)
        self.reset()
        output = self.fn(*inputs)
        pose_loss(output, self.target).total.backward()
        return output


def cases(device: str = "cpu", quick: bool = False, smallest: bool = False, compile_baseline: bool = True,
          cpu_gflop: float = 2000.0) -> list[Case]:
    """Head fwd, model fwd and the training step of every configuration, three ways each."""
    result = []
    for config in configurations(quick, smallest):
        all_flops = forward_flops(config)
        shape = {"config": CONFIG_VARIANT, **config, "frames": 5}
        for part, pass_ in (("head", "fwd"), ("model", "fwd"), ("model", "fwd+bwd")):
            # FLOPs of one call; a training step's backward is not counted (left null)
            flops = all_flops[part] if pass_ == "fwd" else None
            for backend, baseline in WAYS:
                skip = None
                if device == "cpu" and all_flops[part] > cpu_gflop * 1e9:
                    skip = (f"{all_flops[part] / 1e9:.0f} GFLOP per forward exceeds the CPU budget of "
                            f"{cpu_gflop:.0f} GFLOP (--model-gflop raises it)")
                elif baseline == "compile" and not compile_baseline:
                    skip = "torch.compile baseline not requested (--no-compile)"

                def make(config=config, part=part, pass_=pass_, backend=backend, baseline=baseline):
                    return ModelRunner(config, part, pass_, use_kernels=backend == "kernels",
                                       compiled=baseline == "compile", device=device)

                result.append(Case(OP, part, pass_, backend, baseline, dict(shape), "float32", device,
                                   make=None if skip else make, skip=skip, flops=flops,
                                   extra={"batch": config["batch"]}))
    return result
