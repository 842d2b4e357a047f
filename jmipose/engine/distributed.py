"""Process groups started by ``torchrun`` and a resumable sampler that covers every sample once.

``torchrun --nproc_per_node N -m jmipose train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them the run is a single process. The backend is gloo on CPU and nccl on CUDA.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name, local_rank: int = 0, what: str = "train.device") -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a
    ``torch.device``) as a device this process can use; a ``ValueError`` naming ``what`` otherwise."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"{what} must be auto, cpu, cuda or cuda:N, got {str(name)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} is {str(name)!r} but torch sees no CUDA device (a CPU-only torch build, "
                             f"or no GPU visible); use cpu")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"{what} is {str(name)!r} but torch sees {torch.cuda.device_count()} CUDA "
                             f"device(s)")
    return device


def init_distributed(device_name: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (or run as one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, device)


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms (unlike ``hash``)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device) from one integer."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` pairs: a seeded permutation per epoch, rank ``r`` of ``w`` taking
    positions r, r + w, ... so every sample is seen exactly once per epoch over all ranks (no padding,
    no dropping; ranks may get one sample more than others). ``start`` skips this rank's first samples
    (a run resumed inside an epoch). The dataset seeds its augmentation from the pair.
    """

    def __init__(self, num_samples: int, *, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def indices(self) -> list[int]:
        """This rank's sample indices of the current epoch, ``start`` included."""
        if self.shuffle:
            order = np.random.default_rng(mix_seed(self.seed, self.epoch)).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        return order[self.rank::self.world_size].tolist()

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.indices()[self.start:]])

    def __len__(self) -> int:
        return max(len(range(self.rank, self.num_samples, self.world_size)) - self.start, 0)


class SeededSamples(torch.utils.data.Dataset):
    """Adapter for datasets indexed by plain integers whose augmentation uses the global RNGs: each
    ``(epoch, index)`` seeds Python, NumPy and torch from ``(seed, epoch, index)`` before loading, so a
    sample is the same in every run, resumed or not, whatever the worker. In the main process the
    global RNG states are restored afterwards."""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        epoch, index = item
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker:
            seed_everything(mix_seed(self.seed, epoch, index))
            return self.dataset[index]
        saved = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            seed_everything(mix_seed(self.seed, epoch, index))
            try:
                return self.dataset[index]
            finally:
                random.setstate(saved[0])
                np.random.set_state(saved[1])


def accepts_epoch_index(dataset) -> bool:
    """Datasets that take ``(epoch, index)`` themselves (PoseTrackVideoDataset, the synthetic set)."""
    return callable(getattr(dataset, "set_epoch", None))
