"""DataLoader workers that are safe with OpenCV and that, when one dies, say which sample killed it.

A worker killed by a signal (the OOM killer, a segfault in a decoder) makes torch raise
``RuntimeError: DataLoader worker (pid 1234) is killed by signal: Killed`` with no word on the data.
:class:`SampleTracker` wraps the dataset and records in shared memory, per worker, the sample it is
loading; :func:`batches` turns torch's error into a :class:`WorkerDiedError` naming that sample (its
index, epoch and, for datasets with ``frame_paths(index)``, the files), so a crash on one bad file in
a days-long run can be found.

:func:`worker_init` is the ``worker_init_fn`` of every loader here: OpenCV's own thread pool off in
the workers (each worker is already one of several processes; an OpenCV/OpenMP pool inherited
across fork can deadlock) and one torch thread per worker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch

_PID, _EPOCH, _INDEX, _BUSY = range(4)


class WorkerDiedError(RuntimeError):
    """A DataLoader worker process died (killed by a signal or exited) while loading ``index``."""

    def __init__(self, message: str, index: int | None = None, epoch: int | None = None,
                 pid: int | None = None):
        super().__init__(message)
        self.index, self.epoch, self.pid = index, epoch, pid

    def __reduce__(self):
        return (type(self), (str(self), self.index, self.epoch, self.pid))


def worker_init(worker_id: int) -> None:
    """``worker_init_fn``: OpenCV single-threaded, one torch thread (the workers are the parallelism)."""
    try:
        import cv2

        cv2.setNumThreads(0)
        cv2.ocl.setUseOpenCL(False)
    except ImportError:  # pragma: no cover - opencv is a dependency
        pass
    torch.set_num_threads(1)


class SampleTracker(torch.utils.data.Dataset):
    """``dataset`` unchanged, plus a shared-memory record of the sample each worker is loading."""

    def __init__(self, dataset, num_workers: int):
        self.dataset = dataset
        # [worker] -> (pid, epoch, index, busy); shared so the main process reads what workers wrote
        self.slots = torch.full((max(1, int(num_workers)), 4), -1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        info = torch.utils.data.get_worker_info()
        if info is None or info.id >= len(self.slots):
            return self.dataset[item]
        epoch, index = item if isinstance(item, tuple) and len(item) == 2 else (-1, item)
        slot = self.slots[info.id]
        slot[_PID], slot[_EPOCH], slot[_INDEX] = os.getpid(), int(epoch), int(index)
        slot[_BUSY] = 1
        result = self.dataset[item]
        slot[_BUSY] = 0  # the index stays: a death in collate still names the last sample
        return result

    def describe(self, index: int) -> str:
        base = self.dataset
        while not hasattr(base, "frame_paths") and hasattr(base, "dataset"):
            base = base.dataset  # through adapters such as SeededSamples
        if hasattr(base, "frame_paths"):
            try:
                return f"sample {index} (frames {', '.join(str(p) for p in base.frame_paths(index))})"
            except Exception:  # noqa: BLE001 - a description must never hide the real error
                pass
        return f"sample {index}"

    def report(self, error: BaseException) -> WorkerDiedError:
        """The :class:`WorkerDiedError` for torch's worker-death ``error``."""
        pids = {int(p) for p in re.findall(r"\d+", _pid_text(str(error)))}
        rows = [row.tolist() for row in self.slots]
        suspects = [r for r in rows if r[_PID] in pids] or [r for r in rows if r[_BUSY] == 1]
        if not suspects:
            return WorkerDiedError(f"{error} (no sample was being loaded when it died: it died starting up "
                                   f"or while collating a batch)")
        pid, epoch, index, busy = suspects[0]
        what = "while loading" if busy == 1 else "after loading (while collating the batch of)"
        epoch_text = f" of epoch {epoch}" if epoch >= 0 else ""
        also_busy = [r[_INDEX] for r in suspects[1:]]
        others = f"; other workers were busy with samples {also_busy}" if also_busy else ""
        return WorkerDiedError(f"{error}: worker pid {pid} died {what} {self.describe(index)}{epoch_text}"
                               f"{others}. Load that sample with num_workers=0 to see the failure in the main "
                               f"process",
                               index=index, epoch=epoch if epoch >= 0 else None, pid=pid)


def _pid_text(message: str) -> str:
    match = re.search(r"pid(?:\(s\))?\s*([\d,\s]+)", message)
    return match.group(1) if match else ""


def is_worker_death(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and re.search(r"DataLoader worker \(pid", str(error)) is not None


def batches(loader: Iterable, tracker: SampleTracker | None) -> Iterator[Any]:
    """The batches of ``loader``; a worker death is re-raised as :class:`WorkerDiedError`."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as error:
            if tracker is not None and is_worker_death(error):
                raise tracker.report(error) from error
            raise
        yield batch


def make_loader(dataset, *, num_workers: int,
                **kwargs) -> tuple[torch.utils.data.DataLoader, SampleTracker | None]:
    """A DataLoader with :func:`worker_init` and, with workers, a :class:`SampleTracker`."""
    tracker = SampleTracker(dataset, num_workers) if num_workers > 0 else None
    loader = torch.utils.data.DataLoader(tracker if tracker is not None else dataset, num_workers=num_workers,
                                         worker_init_fn=worker_init if num_workers > 0 else None, **kwargs)
    return loader, tracker


__all__ = ["SampleTracker", "WorkerDiedError", "batches", "is_worker_death", "make_loader", "worker_init"]
