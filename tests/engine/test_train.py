"""The trainer's mechanics on a toy model: logs, checkpoints, exact resume (in process and after
kill -9), crash safety during checkpoint writes, refusal of pickles and torn files, torchrun DDP."""

from __future__ import annotations

import csv
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jmipose.checkpoint import CheckpointError
from jmipose.engine.distributed import EpochSampler
from jmipose.engine.state import load_generation
from tests.engine.toy import make_trainer, weights_digest

TOY_SCRIPT = Path(__file__).with_name("toy.py")
PROJECT = Path(__file__).resolve().parents[2]


def _run_toy(out: Path, *args: str, env: dict | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(TOY_SCRIPT), str(out), *args], env=environment,
                          capture_output=True, text=True, timeout=timeout)


def test_sampler_covers_every_sample_once_per_epoch():
    for n, world in ((20, 1), (21, 2), (7, 3)):
        for epoch in (0, 1):
            seen = []
            for rank in range(world):
                sampler = EpochSampler(n, seed=3, rank=rank, world_size=world)
                sampler.set_epoch(epoch)
                pairs = list(sampler)
                assert all(e == epoch for e, _ in pairs) and len(pairs) == len(sampler)
                seen += [i for _, i in pairs]
            assert sorted(seen) == list(range(n))
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(4, start=6)
    assert list(sampler) == full[6:] and len(sampler) == 4
    sampler.set_epoch(5)
    assert list(sampler) != [(5, i) for _, i in full]  # a new order each epoch


def test_toy_training_writes_logs_checkpoints_and_curves(tmp_path):
    result = make_trainer(tmp_path / "run", plot=True).fit()
    assert result.epochs_done == 2 and result.global_step == 10  # 20 samples, batch 4
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    # the lr drops x0.1 after the milestone (epoch 1)
    assert {float(r["lr"]) for r in rows[:5]} == {1e-2} and {float(r["lr"]) for r in rows[5:]} == {1e-3}
    assert len(result.history) == 2 and result.best_epoch in (1, 2)
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["global_step"] == 10
    _, training, tensors = load_generation(tmp_path / "run" / "checkpoints", "best")
    assert training["best_epoch"] == result.best_epoch and "rng.torch" in tensors
    # the checkpoint folder holds only what last and best point to
    folder = tmp_path / "run" / "checkpoints"
    names = {p.name.split(".")[0] for p in folder.iterdir() if p.name.startswith("ckpt-")}
    assert 1 <= len(names) <= 2


def test_a_second_run_into_the_same_folder_needs_resume(tmp_path):
    make_trainer(tmp_path / "run", epochs=1).fit()
    with pytest.raises(FileExistsError, match="resume"):
        make_trainer(tmp_path / "run", epochs=1).fit()


def test_resume_mid_epoch_in_process_is_bit_identical(tmp_path):
    reference = make_trainer(tmp_path / "ref")
    reference.fit()
    interrupted = make_trainer(tmp_path / "cut", max_steps=7)  # stops inside epoch 2 (steps 6-10)
    assert interrupted.fit().global_step == 7
    # other initial weights: everything must come from the checkpoint
    resumed = make_trainer(tmp_path / "cut", model_seed=123)
    result = resumed.fit(resume=True)
    assert result.global_step == 10
    assert weights_digest(resumed.model) == weights_digest(reference.model)
    ref_state, res_state = reference.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for key in ref_state:
        for name in ref_state[key]:
            assert torch.equal(ref_state[key][name], res_state[key][name])
    # the logs read as if the run had not stopped
    ref_rows = list(csv.DictReader(open(tmp_path / "ref" / "train_log.csv")))
    cut_rows = list(csv.DictReader(open(tmp_path / "cut" / "train_log.csv")))
    assert [(r["step"], r["loss"]) for r in cut_rows] == [(r["step"], r["loss"]) for r in ref_rows]
    assert result.history == reference.history and result.best_ap == reference.best_ap


def _forked(fn) -> int:
    """Run ``fn`` in a forked child (no re-import of torch); its exit status, negative for a signal."""
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            fn()
        except BaseException:  # noqa: BLE001 - report through the exit status
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_kill_9_mid_epoch_then_resume_gives_the_same_weights(tmp_path):
    reference = make_trainer(tmp_path / "ref")
    reference.fit()
    # a real process, SIGKILLed inside its 14th file rename: in the middle of the third checkpoint
    killed = _run_toy(tmp_path / "cut", env={"JMIPOSE_TOY_KILL": "14"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    record = json.loads((tmp_path / "cut" / "checkpoints" / "last.json").read_text())
    assert record["metadata"]["training"]["epoch"] == 0  # killed mid-epoch
    resumed = _run_toy(tmp_path / "cut", "--resume", "--digest-file", str(tmp_path / "cut.sha"))
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "cut.sha.0").read_text() == weights_digest(reference.model)


def test_sigkill_during_every_checkpoint_write_leaves_a_valid_checkpoint(tmp_path):
    from tests.engine.toy import install_kill_switch

    reference = make_trainer(tmp_path / "ref", epochs=1)
    reference.fit()
    # A checkpoint renames 4 files (state, weights, record, last pointer); the runs start with 2 log
    # rewrites. Killing inside each of the first checkpoints' renames must leave `last` loadable
    # (or absent before the first checkpoint), and resuming must end with the reference weights.
    for kill_at in range(1, 12):
        out = tmp_path / f"cut{kill_at}"
        status = _forked(lambda: (install_kill_switch(kill_at), make_trainer(out, epochs=1).fit()))
        assert status == -signal.SIGKILL, kill_at
        os.replace = _REAL_REPLACE  # the child patched its own copy only; be sure
        folder = out / "checkpoints"
        if (folder / "last.json").is_file():
            load_generation(folder, "last")  # sizes and hashes verify
        resumed = make_trainer(out, epochs=1)
        resumed.fit(resume=True)
        assert weights_digest(resumed.model) == weights_digest(reference.model), kill_at
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


_REAL_REPLACE = os.replace


def _checkpoint_step(folder: Path) -> int:
    try:
        return json.loads((folder / "last.json").read_text())["metadata"]["training"]["global_step"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_repeated_sigkill_at_random_times_always_resumes_to_the_same_weights(tmp_path):
    reference = make_trainer(tmp_path / "ref", epochs=3, width=64)
    reference.fit()
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    folder = tmp_path / "cut" / "checkpoints"
    kills, seen = 0, -1
    for _attempt in range(40):
        args = [sys.executable, str(TOY_SCRIPT), str(tmp_path / "cut"), "--epochs", "3", "--width", "64",
                "--resume", "--digest-file", str(tmp_path / "cut.sha")]
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # let it make progress past the last kill (a new checkpoint), then kill it at a random moment:
        # inside a step, between steps or in the middle of writing the next checkpoint
        deadline = time.monotonic() + 300
        while process.poll() is None and _checkpoint_step(folder) <= seen and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None:
            time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read().decode()
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        seen = _checkpoint_step(folder)
        load_generation(folder, "last")  # whatever the moment, `last` verifies
    assert kills >= 3, "the run finished before it was killed often enough to test anything"
    assert (tmp_path / "cut.sha.0").read_text() == weights_digest(reference.model)


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {_Boom.marker}",))


def test_a_pickle_where_a_checkpoint_is_expected_is_refused_not_executed(tmp_path):
    make_trainer(tmp_path / "run", epochs=1).fit()
    folder = tmp_path / "run" / "checkpoints"
    record = json.loads((folder / "last.json").read_text())
    marker = tmp_path / "pwned"
    _Boom.marker = marker
    blob = pickle.dumps({"weight": _Boom()})
    weights = folder / record["weights"]["file"]
    weights.write_bytes(blob)
    # an attacker who also fixes the record's size and hash still gets nothing executed
    import hashlib

    record["weights"].update(size=len(blob), sha256=hashlib.sha256(blob).hexdigest())
    (folder / "last.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_generation(folder, "last")
    with pytest.raises(CheckpointError):
        make_trainer(tmp_path / "run", epochs=2).fit(resume=True)
    assert not marker.exists()


def test_truncated_checkpoint_files_are_detected(tmp_path):
    make_trainer(tmp_path / "run", epochs=1).fit()
    folder = tmp_path / "run" / "checkpoints"
    record = json.loads((folder / "last.json").read_text())
    state = folder / record["metadata"]["training"]["state_file"]["file"]
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generation(folder, "last")
    weights = folder / record["weights"]["file"]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generation(folder, "last")


def test_resume_refuses_another_model_config(tmp_path):
    make_trainer(tmp_path / "run", epochs=1).fit()
    with pytest.raises(ValueError, match="model config differs"):
        make_trainer(tmp_path / "run", epochs=2, width=4).fit(resume=True)


def test_torchrun_two_processes_on_cpu(tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    # its own session, so that a hung run's workers are killed with the launcher, not left behind
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(29500 + os.getpid() % 1000), str(TOY_SCRIPT),
                             str(tmp_path / "ddp"),
                             "--epochs", "1", "--digest-file", str(tmp_path / "ddp.sha")],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"2-process torchrun did not finish in 180 s; stderr: {stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    # DDP keeps the replicas identical; rank 0 logged and checkpointed
    assert (tmp_path / "ddp.sha.0").read_text() == (tmp_path / "ddp.sha.1").read_text()
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "train_log.csv")))
    # 21 samples over 2 ranks, batch 5: rank 0 has 11 (3 batches), rank 1 has 10 (2, then joins)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    # the loss terms' gradient norms are measured (on rank 0) without disturbing DDP's reduction
    assert all(float(r["grad_norm_heatmap"]) > 0 and float(r["grad_norm_aux"]) > 0 for r in rows)
    _, training, _ = load_generation(tmp_path / "ddp" / "checkpoints", "last")
    assert training["world_size"] == 2 and training["global_step"] == 3
    assert time.perf_counter() - started < 180


def _kill_at(trainer, phase: str, call: int) -> None:
    """SIGKILL this process at the ``call``-th time training reaches ``phase``: inside the model's forward,
    midway through backward (the first parameter gradient computed, the others not), or right after the
    optimizer updated the weights and before the step's checkpoint is written."""
    calls = {"n": 0}

    def maybe_die(*_):
        calls["n"] += 1
        if calls["n"] == call:
            os.kill(os.getpid(), signal.SIGKILL)

    if phase == "forward":
        trainer.model.register_forward_pre_hook(maybe_die)
    elif phase == "backward":
        next(p for p in trainer.model.parameters() if p.requires_grad).register_hook(lambda g: maybe_die())
    else:  # the trainer makes its optimizer in fit(): a global hook (this is a forked child)
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(maybe_die)


def test_sigkill_at_random_points_of_steps_several_times_resumes_to_the_same_weights(tmp_path):
    reference = make_trainer(tmp_path / "ref")
    reference.fit()
    rng = random.Random(10)
    out = tmp_path / "cut"
    kills = 0
    for attempt in range(4):  # four kills in a row, each resumed from what the previous one left
        # call >= 2: every run completes (and checkpoints) a step before it dies; <= 3: the 10-step run
        # cannot finish before the fourth kill
        phase, call = rng.choice(["forward", "backward", "optimizer"]), rng.randint(2, 3)

        def run():
            trainer = make_trainer(out)
            _kill_at(trainer, phase, call)
            trainer.fit(resume=(out / "checkpoints" / "last.json").is_file())

        status = _forked(run)
        assert status == -signal.SIGKILL, (attempt, phase, call, status)
        kills += 1
        load_generation(out / "checkpoints", "last")  # a valid checkpoint after every kill
    resumed = make_trainer(out)
    resumed.fit(resume=True)
    assert kills == 4
    assert weights_digest(resumed.model) == weights_digest(reference.model)


def test_logged_gradient_norms_equal_autograd(tmp_path, monkeypatch):
    """The loss terms' gradient norms in the CSV log and TensorBoard are those of a direct
    torch.autograd.grad on the same graph, at the first step and then every grad_norm_every steps."""
    from jmipose.engine import runlog
    from jmipose.engine.train import Trainer
    from tests.engine.toy import ToyPose, ToySet, toy_config

    scalars = []
    monkeypatch.setattr(runlog.TensorBoard, "scalars",
                        lambda self, prefix, values, step: scalars.append((prefix, dict(values), step)))
    torch.manual_seed(0)
    model = ToyPose()
    params = [p for p in model.parameters() if p.requires_grad]
    direct = []

    def norm(term):  # the aux term reaches the head only: other parameters have no gradient (zero)
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads if g is not None)))

    def loss_fn(output, batch):
        mse = ((output.heatmaps - batch["heatmaps"]) ** 2).mean()
        aux = 2 * output.aux_loss
        direct.append((norm(mse), norm(aux)))
        return mse + aux, {"heatmap_loss": mse.detach(), "aux_loss": output.aux_loss.detach()}, \
            {"heatmap": mse, "aux": aux}

    cfg = toy_config(epochs=1, log_every=2, grad_norm_every=3, checkpoint_every=0, val_every=0)
    Trainer(model, ToySet(24), cfg, tmp_path / "run", loss_fn=loss_fn, plot=False).fit()  # 6 steps
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 4, 6]  # the first step, then every log_every
    measured = {1: direct[0], 3: direct[2], 6: direct[5]}  # step 1, then every grad_norm_every
    logged = {int(r["step"]): r for r in rows if r["grad_norm_heatmap"]}
    # a window logs the last measurement made in it: step 3's in the row of step 4
    assert sorted(logged) == [1, 4, 6]
    for row_step, step in ((1, 1), (4, 3), (6, 6)):
        heatmap, aux = measured[step]
        row = logged[row_step]
        assert float(row["grad_norm_heatmap"]) == pytest.approx(heatmap, rel=1e-5)
        assert float(row["grad_norm_aux"]) == pytest.approx(aux, rel=1e-5)
        assert float(row["grad_ratio_aux"]) == pytest.approx(aux / heatmap, rel=1e-5)
        board = next(values for prefix, values, s in scalars if prefix == "train" and s == row_step)
        assert board["grad_norm_heatmap"] == pytest.approx(heatmap, rel=1e-12)
        assert board["grad_ratio_aux"] == pytest.approx(aux / heatmap, rel=1e-12)


def test_gradient_norms_do_not_change_training(tmp_path):
    """Measuring the terms' gradients leaves the update alone: same weights with and without."""
    from jmipose.engine.train import Trainer
    from tests.engine.toy import ToyPose, ToySet, toy_config

    digests = []
    for every in (1, 0):
        torch.manual_seed(0)
        model = ToyPose()

        def loss_fn(output, batch):
            mse = ((output.heatmaps - batch["heatmaps"]) ** 2).mean()
            aux = 2 * output.aux_loss
            return mse + aux, {"heatmap_loss": mse.detach()}, {"heatmap": mse, "aux": aux}

        cfg = toy_config(epochs=1, log_every=1, grad_norm_every=every, checkpoint_every=0, val_every=0)
        Trainer(model, ToySet(12), cfg, tmp_path / f"run{every}", loss_fn=loss_fn, plot=False).fit()
        digests.append(weights_digest(model))
    assert digests[0] == digests[1]
