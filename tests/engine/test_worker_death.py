"""DataLoader workers: a worker killed while loading a sample is reported, by the trainer and by the
evaluator, with that sample (not torch's bare "worker (pid N) is killed by signal"); workers run
OpenCV single-threaded."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from jmipose.config import EvalConfig
from jmipose.data.workers import SampleTracker, WorkerDiedError, batches, make_loader
from jmipose.engine.evaluate import predict
from jmipose.engine.train import Trainer
from tests.engine.toy import ToyPose, ToySet, toy_config, toy_loss, toy_validate


class KillingSet(ToySet):
    """ToySet whose sample ``victim`` SIGKILLs the worker loading it (a decoder crash, the OOM killer)."""

    def __init__(self, victim: int, n: int = 20):
        super().__init__(n)
        self.victim = victim

    def __getitem__(self, item):
        index = item[1] if isinstance(item, tuple) else item
        if index == self.victim and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(item)

    def frame_paths(self, index):
        return [f"clip/{index:06d}.jpg"]


def test_trainer_names_the_sample_that_killed_its_worker(tmp_path):
    trainer = Trainer(ToyPose(), KillingSet(victim=13), toy_config(num_workers=1, epochs=1), tmp_path,
                      run_config={"model": {"toy": 8}}, validate=toy_validate, loss_fn=toy_loss)
    with pytest.raises(WorkerDiedError, match=r"died while loading sample 13 \(frames clip/000013\.jpg\) of epoch 0"
                       ) as raised:
        trainer.fit()
    assert raised.value.index == 13 and raised.value.epoch == 0
    assert str(raised.value).startswith("DataLoader worker (pid")  # torch's own words come first
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_evaluator_names_the_sample_that_killed_its_worker():
    cfg = EvalConfig(batch_size=4, num_workers=1)
    with pytest.raises(WorkerDiedError, match=r"died while loading sample 2 \(frames clip/000002\.jpg\)") as raised:
        predict(ToyPose(), KillingSet(victim=2), cfg)
    assert raised.value.index == 2 and raised.value.epoch is None


def test_a_death_after_loading_names_the_last_sample():
    tracker = SampleTracker(ToySet(4), num_workers=2)
    tracker.slots[1] = torch.tensor([4242, 3, 17, 0])
    error = tracker.report(RuntimeError("DataLoader worker (pid(s) 4242) exited unexpectedly"))
    assert error.index == 17 and error.pid == 4242
    assert "after loading (while collating the batch of) sample 17 of epoch 3" in str(error)
    idle = SampleTracker(ToySet(4), num_workers=1).report(RuntimeError("DataLoader worker (pid 1) is killed"))
    assert idle.index is None and "no sample was being loaded" in str(idle)


def test_other_errors_pass_through_untouched():
    class Failing(ToySet):
        def __getitem__(self, item):
            raise KeyError("a dataset bug")

    loader, tracker = make_loader(Failing(4), num_workers=1, batch_size=2)
    with pytest.raises(KeyError, match="a dataset bug"):
        next(batches(loader, tracker))


class ThreadReport(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        import cv2

        return torch.tensor([cv2.getNumThreads(), torch.get_num_threads()])


def test_workers_run_opencv_and_torch_single_threaded():
    loader, tracker = make_loader(ThreadReport(), num_workers=1, batch_size=2)
    (report,) = list(batches(loader, tracker))
    assert report[:, 0].tolist() == [1, 1]  # cv2.setNumThreads(0): OpenCV runs its loops in the caller
    assert report[:, 1].tolist() == [1, 1]
