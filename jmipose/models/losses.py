"""Losses: the joint-weighted heatmap MSE, the auxiliary information objectives of JMI / JM-Pose and
the weighting the trainer applies (``pose_loss``).

Information estimators (``aux_estimator``; every term of an objective uses the same one)
-----------------------------------------------------------------------------------------
All estimators compare per-channel spatial distributions: for a map X [B, C, h, w],
``p_X[b, c] = softmax over the h*w pixels of X[b, c] / tau`` (tau = 0.05, the authors' value).

- ``official`` (the authors' estimator, docs/FIDELITY.md): their code calls
  ``torch.nn.functional.kl_div(input=p_X, target=p_Y)`` with the default ``mean`` reduction, so the
  value is

      I^(X -> Y) = mean over (b, c, pixels) of p_Y (log p_Y - p_X)

  Note that ``kl_div`` expects log-probabilities as its input and is handed probabilities: this is
  not a KL divergence but -H(p_Y)/N - <p_X, p_Y>/N per (b, c) (N = h*w pixels), a value of order
  log(N)/N (about 1e-3 at 96x72).  Minimising it spreads p_Y and moves it onto p_X's mass.  The
  order matters (X is the ``input``, Y the ``target``); the term their training function weights
  by 2 passes ``freeze=False``, so gradients reach both sides (their estimator's default detaches X).
- ``exp_neg_kl`` (ours, not in the papers): the symmetric KL divergence per (b, c)

      D(X, Y)[b, c] = 1/2 KL(p_X || p_Y) + 1/2 KL(p_Y || p_X)

  becomes I^(X; Y) = mean exp(-D) in (0, 1]: 1 for identical distributions, -> 0 for disjoint ones.
  Bounded, so minimising it cannot run away by scaling features up.  Its gradients are orders of
  magnitude larger than the official estimator's: with the official weight 2 the auxiliary term
  dominates the heatmap loss at initialisation (``jmipose info --model CONFIG`` prints the ratio).
- ``neg_kl`` (ours): I^(X; Y) = -mean D, the sign-flipped symmetric divergence (unbounded below).

Sign convention: both papers ask for *diverse, non-redundant* joint and motion cues, and the official
training function adds +2 x the term, so the returned auxiliary losses are values to be **minimised**.

- JMI (``mi``): L = I^(M~ -> J~) for the gated outputs of each interaction block (motion first, as
  the motion term of the authors' code puts its motion features first).
- JM-Pose (``orthogonality``): L = I(J; M | H^) = I(J; M) - I(M; H^) + I(M; H^ | J) per block, with
  the conditional term by the chain rule I(M; H^ | J) = I(M; (H^, J)) - I(M; J).  I(J; M) compares M
  and J channel by channel as above.  The heatmaps H^ (K or 3K channels, not aligned with the feature
  channels) enter as one spatial map per image, their maximum over channels ("where any joint is"),
  and the terms with H^ compare it with one map per feature, the channel mean of M (of J): the
  distributions p_M, p_H^, p_J of these maps and, for the pair (H^, J), the normalised product
  p ~ p_H^ * p_J (softmax of the summed logits).  So
  I(M; H^) = I^(M_mean; H^_max) and I(M; H^ | J) = I^(M_mean; (H^_max, J_mean)) - I^(M_mean; J_mean).
  This decomposition is ours (the authors' published code has no orthogonality objective); the
  estimator of each term is the configured one.  (A first version compared every channel of M with
  H^_max; maximising I(M; H^) then forced every motion channel into the heatmap's peaks and stalled
  the heatmap loss of a tiny model at a 3x drop on a single clip; with channel means it falls 30x.)
  Each term is available on its own (``orthogonality_terms``).

Everything is computed in float32 (float64 stays float64), also under autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

AUX_LOSS_WEIGHT = 2.0  # the official training function adds 2 x the auxiliary term (docs/FIDELITY.md)
MI_TEMPERATURE = 0.05
ESTIMATORS = ("official", "exp_neg_kl", "neg_kl")


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def spatial_log_distribution(features: Tensor, temperature: float = MI_TEMPERATURE) -> Tensor:
    """log softmax over pixels per channel: [B, C, h, w] -> [B, C, h*w] (float32 or float64)."""
    if features.dim() != 4:
        raise ValueError(f"spatial_log_distribution: features must be [B, C, h, w], "
                         f"got {tuple(features.shape)}")
    flat = features.to(_compute_dtype(features)).flatten(2)
    return F.log_softmax(flat / temperature, dim=-1)


def symmetric_kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """1/2 KL(p||q) + 1/2 KL(q||p) over the last dim, from log-distributions (broadcasting)."""
    return 0.5 * ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)


def official_information(log_p: Tensor, log_q: Tensor) -> Tensor:
    """The authors' estimator from log-distributions (module docstring): ``kl_div(input=p, target=q)``
    with the mean reduction, i.e. the mean of ``q (log q - p)`` over every element (broadcasting)."""
    return (log_q.exp() * (log_q - log_p.exp())).mean()


def information(log_p: Tensor, log_q: Tensor, estimator: str = "official") -> Tensor:
    """The information value between two sets of spatial distributions (module docstring)."""
    if estimator == "official":
        return official_information(log_p, log_q)
    divergence = symmetric_kl(log_p, log_q)
    if estimator == "exp_neg_kl":
        return torch.exp(-divergence).mean()
    if estimator == "neg_kl":
        return -divergence.mean()
    raise ValueError(f"information: estimator must be one of {ESTIMATORS}, got {estimator!r}")


def mutual_information_objective(motion: Tensor, joint: Tensor, temperature: float = MI_TEMPERATURE,
                                 estimator: str = "official") -> Tensor:
    """JMI's L_MI: I^(M~ -> J~) between two [B, C, h, w] maps of the same shape (to minimise)."""
    if motion.shape != joint.shape:
        raise ValueError(f"mutual_information_objective: motion {tuple(motion.shape)} and joint "
                         f"{tuple(joint.shape)} must have one shape")
    log_motion = spatial_log_distribution(motion, temperature)
    return information(log_motion, spatial_log_distribution(joint, temperature), estimator)


class OrthogonalityTerms(NamedTuple):
    joint_motion: Tensor            # I(J; M)
    motion_heatmap: Tensor          # I(M; H^)
    motion_heatmap_given_joint: Tensor  # I(M; H^ | J) = I(M; (H^, J)) - I(M; J)

    @property
    def total(self) -> Tensor:
        """I(J; M | H^) = I(J; M) - I(M; H^) + I(M; H^ | J)."""
        return self.joint_motion - self.motion_heatmap + self.motion_heatmap_given_joint


def orthogonality_terms(joint: Tensor, motion: Tensor, heatmaps: Tensor, temperature: float = MI_TEMPERATURE,
                        estimator: str = "official") -> OrthogonalityTerms:
    """The three terms of JM-Pose's information-orthogonality objective (module docstring).

    joint, motion [B, C, h, w]; heatmaps [B, K, h, w] (any K)."""
    if joint.shape != motion.shape:
        raise ValueError(f"orthogonality_terms: joint {tuple(joint.shape)} and motion {tuple(motion.shape)} "
                         f"must have one shape")
    if heatmaps.dim() != 4 or heatmaps.shape[0] != joint.shape[0] or heatmaps.shape[2:] != joint.shape[2:]:
        raise ValueError(f"orthogonality_terms: heatmaps must be [B, K, h, w] with B, h, w of the features "
                         f"{tuple(joint.shape)}, got {tuple(heatmaps.shape)}")
    dtype = _compute_dtype(joint)
    joint_motion = information(spatial_log_distribution(motion, temperature),
                               spatial_log_distribution(joint, temperature), estimator)
    # Terms with H^ compare one map per image: the channel means of M and J, the channel max of H^.
    motion_map = motion.to(dtype).mean(dim=1, keepdim=True).flatten(2) / temperature     # [B, 1, N]
    joint_map = joint.to(dtype).mean(dim=1, keepdim=True).flatten(2) / temperature
    heat_map = heatmaps.to(dtype).amax(dim=1, keepdim=True).flatten(2) / temperature
    log_motion = F.log_softmax(motion_map, dim=-1)
    motion_heatmap = information(log_motion, F.log_softmax(heat_map, dim=-1), estimator)
    motion_heatmap_and_joint = information(log_motion, F.log_softmax(heat_map + joint_map, dim=-1), estimator)
    motion_joint_maps = information(log_motion, F.log_softmax(joint_map, dim=-1), estimator)
    return OrthogonalityTerms(joint_motion, motion_heatmap, motion_heatmap_and_joint - motion_joint_maps)


def orthogonality_objective(joint: Tensor, motion: Tensor, heatmaps: Tensor,
                            temperature: float = MI_TEMPERATURE, estimator: str = "official") -> Tensor:
    """JM-Pose's L_IO = I(J; M | H^) (to minimise)."""
    return orthogonality_terms(joint, motion, heatmaps, temperature, estimator).total


def joint_mse_loss(heatmaps: Tensor, target: Tensor, target_weight: Tensor | None = None) -> Tensor:
    """The public pose-HRNet ``JointsMSELoss`` with target weights:

        0.5 * mean over (batch, joints, pixels) of (w_bj * (pred - target))**2

    (each joint's prediction and target are multiplied by its weight before the MSE, so the weight
    enters squared; a weight of 0 drops an unlabelled joint).  target_weight: [B, K] or [B, K, 1]."""
    if heatmaps.shape != target.shape or heatmaps.dim() != 4:
        raise ValueError(f"joint_mse_loss: heatmaps {tuple(heatmaps.shape)} and target {tuple(target.shape)} "
                         f"must both be [B, K, h, w]")
    diff = heatmaps.to(_compute_dtype(heatmaps)) - target.to(_compute_dtype(heatmaps))
    if target_weight is not None:
        weight = target_weight.reshape(target_weight.shape[0], -1)
        if weight.shape != heatmaps.shape[:2]:
            raise ValueError(f"joint_mse_loss: target_weight must be [B, K] or [B, K, 1] with "
                             f"[B, K] = {list(heatmaps.shape[:2])}, got {tuple(target_weight.shape)}")
        diff = diff * weight.to(diff.dtype)[:, :, None, None]
    return 0.5 * diff.pow(2).mean()


class PoseLoss(NamedTuple):
    total: Tensor       # heatmap + aux_weight * aux: what the trainer back-propagates
    heatmap: Tensor
    aux: Tensor


def pose_loss(output, target: Tensor, target_weight: Tensor | None = None,
              aux_weight: float = AUX_LOSS_WEIGHT) -> PoseLoss:
    """The training loss of every variant from a ``PoseOutput``: the joint-weighted MSE of the final
    heatmaps plus ``aux_weight`` (2, the weight of the official training function) times the model's
    auxiliary loss."""
    heatmap = joint_mse_loss(output.heatmaps, target, target_weight)
    aux = output.aux_loss.to(heatmap.dtype)
    return PoseLoss(heatmap + aux_weight * aux, heatmap, aux)
