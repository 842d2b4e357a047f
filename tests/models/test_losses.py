"""Losses against hand computations: the joint-weighted MSE, the information estimator and the two
auxiliary objectives, and the trainer's weighting."""

from __future__ import annotations

import math

import pytest
import torch

from jmipose.models import AUX_LOSS_WEIGHT, PoseOutput, joint_mse_loss, pose_loss
from jmipose.models.losses import (information, mutual_information_objective, orthogonality_objective,
                                   orthogonality_terms, spatial_log_distribution, symmetric_kl)


def test_joint_mse_matches_the_per_joint_definition():
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 4, 5, 6, generator=generator, dtype=torch.float64)
    target = torch.rand(3, 4, 5, 6, generator=generator, dtype=torch.float64)
    weight = torch.tensor([[1.0, 0.0, 1.5, 1.2], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0]],
                          dtype=torch.float64)
    # public JointsMSELoss: mean over joints of 0.5 * MSE(pred_j * w_j, target_j * w_j)
    per_joint = []
    for j in range(4):
        p = pred[:, j].reshape(3, -1) * weight[:, j:j + 1]
        t = target[:, j].reshape(3, -1) * weight[:, j:j + 1]
        per_joint.append(0.5 * ((p - t) ** 2).mean())
    expected = sum(per_joint) / 4
    torch.testing.assert_close(joint_mse_loss(pred, target, weight), expected)
    torch.testing.assert_close(joint_mse_loss(pred, target, weight[..., None]), expected)
    torch.testing.assert_close(joint_mse_loss(pred, target), 0.5 * ((pred - target) ** 2).mean())


def test_joint_mse_zero_weight_ignores_a_joint_and_rejects_bad_shapes():
    pred, target = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    target[0, 1] = 7.0
    assert joint_mse_loss(pred, target, torch.tensor([[1.0, 0.0]])).item() == 0.0
    with pytest.raises(ValueError, match="target_weight"):
        joint_mse_loss(pred, target, torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"\[B, K, h, w\]"):
        joint_mse_loss(pred, target[:, :1])


def test_pose_loss_adds_twice_the_aux_term():
    heatmaps = torch.zeros(1, 2, 3, 3)
    target = torch.ones(1, 2, 3, 3)
    output = PoseOutput(heatmaps, heatmaps, torch.tensor(0.25))
    loss = pose_loss(output, target, torch.ones(1, 2))
    assert AUX_LOSS_WEIGHT == 2.0
    assert loss.heatmap.item() == pytest.approx(0.5)
    assert loss.aux.item() == pytest.approx(0.25)
    assert loss.total.item() == pytest.approx(0.5 + 2 * 0.25)
    assert pose_loss(output, target, aux_weight=0.0).total.item() == pytest.approx(0.5)


def _distributions(x: torch.Tensor, tau: float) -> list[list[list[float]]]:
    """Loop-by-loop per-channel spatial softmax in float64."""
    b, c = x.shape[:2]
    flat = x.double().reshape(b, c, -1).tolist()
    out = []
    for row in flat:
        channels = []
        for values in row:
            top = max(values)
            exps = [math.exp((v - top) / tau) for v in values]
            total = sum(exps)
            channels.append([e / total for e in exps])
        out.append(channels)
    return out


def _sym_kl(p: list[float], q: list[float]) -> float:
    return 0.5 * sum(pi * math.log(pi / qi) + qi * math.log(qi / pi) for pi, qi in zip(p, q))


def test_estimator_matches_a_loop_reference():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 5, generator=generator) * 0.1
    y = torch.randn(2, 3, 4, 5, generator=generator) * 0.1
    px, py = _distributions(x, 0.05), _distributions(y, 0.05)
    divergences = [_sym_kl(px[b][c], py[b][c]) for b in range(2) for c in range(3)]
    torch.testing.assert_close(
        spatial_log_distribution(x).exp(), torch.tensor(px, dtype=torch.float32), rtol=1e-5, atol=1e-7)
    kl = symmetric_kl(spatial_log_distribution(x), spatial_log_distribution(y))
    torch.testing.assert_close(kl.flatten().double(), torch.tensor(divergences, dtype=torch.float64),
                               rtol=1e-4, atol=1e-6)
    expected_exp = sum(math.exp(-d) for d in divergences) / 6
    assert mutual_information_objective(x, y).item() == pytest.approx(expected_exp, rel=1e-5)
    expected_neg = -sum(divergences) / 6
    assert mutual_information_objective(x, y, proxy="neg_kl").item() == pytest.approx(expected_neg, rel=1e-5)


def test_information_of_identical_and_of_disjoint_maps():
    x = torch.randn(2, 4, 6, 6)
    assert mutual_information_objective(x, x).item() == pytest.approx(1.0)
    assert mutual_information_objective(x, x, proxy="neg_kl").item() == pytest.approx(0.0, abs=1e-6)
    peak_a, peak_b = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    peak_a[0, 0, 0, 0] = 5.0
    peak_b[0, 0, 3, 3] = 5.0
    assert mutual_information_objective(peak_a, peak_b).item() < 1e-6   # mass placed apart: nothing shared
    with pytest.raises(ValueError, match="exp_neg_kl"):
        information(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), proxy="kl")


def test_orthogonality_terms_follow_their_definition():
    generator = torch.Generator().manual_seed(5)
    joint = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.1
    motion = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.1
    heatmaps = torch.rand(2, 5, 4, 4, generator=generator, dtype=torch.float64) * 0.2
    tau = 0.05
    pj, pm = _distributions(joint, tau), _distributions(motion, tau)
    heat = _distributions(heatmaps.amax(1, keepdim=True), tau)
    heat_joint = _distributions(heatmaps.amax(1, keepdim=True) + joint, tau)  # normalised product p_H * p_J

    def info(p, q):
        # q may hold one distribution per image (the heatmap map), shared by every channel
        pairs = [(p[b][c], q[b][min(c, len(q[b]) - 1)]) for b in range(2) for c in range(3)]
        return sum(math.exp(-_sym_kl(x, y)) for x, y in pairs) / 6

    terms = orthogonality_terms(joint, motion, heatmaps)
    assert terms.joint_motion.item() == pytest.approx(info(pj, pm), rel=1e-9)
    assert terms.motion_heatmap.item() == pytest.approx(info(pm, heat), rel=1e-9)
    conditional = info(pm, heat_joint) - info(pm, pj)
    assert terms.motion_heatmap_given_joint.item() == pytest.approx(conditional, rel=1e-9, abs=1e-12)
    total = orthogonality_objective(joint, motion, heatmaps)
    assert total.item() == pytest.approx(info(pj, pm) - info(pm, heat) + info(pm, heat_joint) - info(pm, pj),
                                         rel=1e-9, abs=1e-12)
    assert total.dtype == torch.float64


def test_estimators_compute_in_float32_under_low_precision():
    x = torch.randn(1, 2, 4, 4).bfloat16()
    assert mutual_information_objective(x, x.flip(-1)).dtype == torch.float32
    assert orthogonality_objective(x, x.flip(-1), torch.rand(1, 17, 4, 4).bfloat16()).dtype == torch.float32


def test_estimator_shape_errors():
    with pytest.raises(ValueError, match="one shape"):
        mutual_information_objective(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="heatmaps"):
        orthogonality_objective(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 17, 5, 4))
