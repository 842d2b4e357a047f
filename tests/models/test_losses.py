"""Losses against hand computations: the joint-weighted MSE, the information estimator and the two
auxiliary objectives, and the trainer's weighting."""

from __future__ import annotations

import math
import warnings

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
    assert mutual_information_objective(x, y, estimator="exp_neg_kl").item() == pytest.approx(expected_exp, rel=1e-5)
    expected_neg = -sum(divergences) / 6
    assert mutual_information_objective(x, y, estimator="neg_kl").item() == pytest.approx(expected_neg, rel=1e-5)


def test_information_of_identical_and_of_disjoint_maps():
    x = torch.randn(2, 4, 6, 6)
    assert mutual_information_objective(x, x, estimator="exp_neg_kl").item() == pytest.approx(1.0)
    assert mutual_information_objective(x, x, estimator="neg_kl").item() == pytest.approx(0.0, abs=1e-6)
    peak_a, peak_b = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    peak_a[0, 0, 0, 0] = 5.0
    peak_b[0, 0, 3, 3] = 5.0
    # mass placed apart: nothing shared
    assert mutual_information_objective(peak_a, peak_b, estimator="exp_neg_kl").item() < 1e-6
    with pytest.raises(ValueError, match="official"):
        information(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), estimator="kl")


def test_official_estimator_by_hand():
    # The authors' estimator: kl_div(input=softmax(X / 0.05), target=softmax(Y / 0.05)), mean over all
    # elements.  X has one pixel at 0.05 (logit 1), Y is flat: p_X = (1, e, 1, 1) / (3 + e), q = 1/4, so
    # mean_i q_i (log q_i - p_i) = 1/4 * (log(1/4) - 1/4), since the p_i sum to 1.
    x = torch.tensor([[[[0.0, 0.05], [0.0, 0.0]]]], dtype=torch.float64)
    y = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    value = mutual_information_objective(x, y, estimator="official")
    assert value.item() == pytest.approx(0.25 * (math.log(0.25) - 0.25), rel=1e-12)
    # the other way round: q = (1, e, 1, 1) / (3 + e), p = 1/4
    q = [1 / (3 + math.e), math.e / (3 + math.e), 1 / (3 + math.e), 1 / (3 + math.e)]
    expected = sum(qi * (math.log(qi) - 0.25) for qi in q) / 4
    assert mutual_information_objective(y, x, estimator="official").item() == pytest.approx(expected, rel=1e-12)
    # the same numbers as the call the authors make (kl_div on probabilities, not log-probabilities)
    generator = torch.Generator().manual_seed(7)
    a = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64) * 0.1
    b = torch.randn(2, 3, 4, 5, generator=generator, dtype=torch.float64) * 0.1
    with warnings.catch_warnings():  # torch warns that "mean" divides by the support size too: it does
        warnings.simplefilter("ignore", UserWarning)
        theirs = torch.nn.functional.kl_div(torch.softmax(a.reshape(6, -1) / 0.05, dim=1),
                                            torch.softmax(b.reshape(6, -1) / 0.05, dim=1), reduction="mean")
    torch.testing.assert_close(mutual_information_objective(a, b, estimator="official"), theirs)
    torch.testing.assert_close(mutual_information_objective(a, b), theirs)   # the default estimator


def test_official_estimator_detaches_neither_side():
    # the term the authors weight by 2 passes freeze=False: both feature maps get gradients
    generator = torch.Generator().manual_seed(8)
    a = (torch.randn(1, 2, 3, 3, generator=generator) * 0.1).requires_grad_()
    b = (torch.randn(1, 2, 3, 3, generator=generator) * 0.1).requires_grad_()
    ga, gb = torch.autograd.grad(mutual_information_objective(a, b, estimator="official"), (a, b))
    assert ga.abs().sum() > 0 and gb.abs().sum() > 0
    # and its scale: about log(N) / N for N pixels, far below the symmetric-KL estimators' O(1)
    flat = torch.zeros(1, 48, 96, 72)
    assert mutual_information_objective(flat, flat).item() == pytest.approx(
        (math.log(1 / 6912) - 1 / 6912) / 6912, rel=1e-5)


def test_orthogonality_terms_follow_their_definition():
    generator = torch.Generator().manual_seed(5)
    joint = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.1
    motion = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.1
    heatmaps = torch.rand(2, 5, 4, 4, generator=generator, dtype=torch.float64) * 0.2
    tau = 0.05
    pj, pm = _distributions(joint, tau), _distributions(motion, tau)
    heat_max = heatmaps.amax(1, keepdim=True)
    motion_mean, joint_mean = motion.mean(1, keepdim=True), joint.mean(1, keepdim=True)
    pm_mean, pj_mean = _distributions(motion_mean, tau), _distributions(joint_mean, tau)
    heat = _distributions(heat_max, tau)
    heat_joint = _distributions(heat_max + joint_mean, tau)  # normalised product p_H * p_J

    def info(p, q):
        pairs = [(p[b][c], q[b][c]) for b in range(len(p)) for c in range(len(p[b]))]
        return sum(math.exp(-_sym_kl(x, y)) for x, y in pairs) / len(pairs)

    terms = orthogonality_terms(joint, motion, heatmaps, estimator="exp_neg_kl")
    assert terms.joint_motion.item() == pytest.approx(info(pj, pm), rel=1e-9)
    assert terms.motion_heatmap.item() == pytest.approx(info(pm_mean, heat), rel=1e-9)
    conditional = info(pm_mean, heat_joint) - info(pm_mean, pj_mean)
    assert terms.motion_heatmap_given_joint.item() == pytest.approx(conditional, rel=1e-9, abs=1e-12)
    total = orthogonality_objective(joint, motion, heatmaps, estimator="exp_neg_kl")
    expected = info(pj, pm) - info(pm_mean, heat) + conditional
    assert total.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
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


def test_orthogonality_with_the_official_estimator_puts_motion_first():
    generator = torch.Generator().manual_seed(9)
    joint = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.1
    motion = torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) * 0.1
    heatmaps = torch.rand(2, 5, 4, 4, generator=generator, dtype=torch.float64)
    terms = orthogonality_terms(joint, motion, heatmaps, estimator="official")
    torch.testing.assert_close(terms.joint_motion, mutual_information_objective(motion, joint, estimator="official"))
    motion_mean = motion.mean(1, keepdim=True)
    torch.testing.assert_close(terms.motion_heatmap, mutual_information_objective(
        motion_mean, heatmaps.amax(1, keepdim=True), estimator="official"))
    assert orthogonality_objective(joint, motion, heatmaps).item() == terms.total.item()  # official by default
