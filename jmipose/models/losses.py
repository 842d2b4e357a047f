"""Losses: the joint-weighted heatmap MSE, the auxiliary information objectives of JMI / JM-Pose and
the weighting the trainer applies (``pose_loss``).

Information estimator (one family for every term)
-------------------------------------------------
The authors' code family estimates information between two feature maps from per-channel spatial
distributions: for a map X [B, C, h, w], ``p_X[b, c] = softmax over the h*w pixels of X[b, c] / tau``
(tau = 0.05).  Between two maps we take the symmetric KL divergence per (b, c)

    D(X, Y)[b, c] = 1/2 KL(p_X || p_Y) + 1/2 KL(p_Y || p_X) = 1/2 sum_pixels (p_X - p_Y)(log p_X - log p_Y),

which is 0 when both put the same spatial distribution on every channel and grows as they place
their mass apart.  It becomes an information value ("how much X and Y share"), averaged over b, c:

- ``exp_neg_kl`` (default): I^(X; Y) = mean exp(-D) in (0, 1]: 1 for identical distributions, -> 0
  for disjoint ones.  Bounded, so minimising it (the papers' direction, below) cannot run away by
  scaling features up.
- ``neg_kl``: I^(X; Y) = -mean D, the literal sign-flipped divergence (unbounded below).

Sign convention: both papers ask for *diverse, non-redundant* joint and motion cues, so the returned
auxiliary losses are information values to be **minimised**.

- JMI (``mi``): L = I^(M~; J~) for the gated outputs of each interaction block.
- JM-Pose (``orthogonality``): L = I(J; M | H^) = I(J; M) - I(M; H^) + I(M; H^ | J) per block, with
  the conditional term by the chain rule I(M; H^ | J) = I(M; (H^, J)) - I(M; J).  H^ (the initial
  heatmaps, K or 3K channels) enters as one spatial map, its maximum over channels ("where any joint
  is"), compared with every channel of M; the pair (H^, J) as the normalised product of their
  distributions, p ~ p_H^ * p_J[c] (softmax of the summed logits).  Because D is symmetric,
  I(J; M) and I(M; J) are the same number, so the value equals I(M; (H^, J)) - I(M; H^); all four
  terms are computed as written so that each is available on its own (``orthogonality_terms``).

Everything is computed in float32 (float64 stays float64), also under autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

AUX_LOSS_WEIGHT = 2.0  # the official training function adds 2 x the auxiliary term
MI_TEMPERATURE = 0.05


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


def information(log_p: Tensor, log_q: Tensor, proxy: str = "exp_neg_kl") -> Tensor:
    """The information proxy between two sets of spatial distributions (module docstring)."""
    divergence = symmetric_kl(log_p, log_q)
    if proxy == "exp_neg_kl":
        return torch.exp(-divergence).mean()
    if proxy == "neg_kl":
        return -divergence.mean()
    raise ValueError(f"information: proxy must be 'exp_neg_kl' or 'neg_kl', got {proxy!r}")


def mutual_information_objective(motion: Tensor, joint: Tensor, temperature: float = MI_TEMPERATURE,
                                 proxy: str = "exp_neg_kl") -> Tensor:
    """JMI's L_MI: I^(M~; J~) between two [B, C, h, w] maps of the same shape (to minimise)."""
    if motion.shape != joint.shape:
        raise ValueError(f"mutual_information_objective: motion {tuple(motion.shape)} and joint "
                         f"{tuple(joint.shape)} must have one shape")
    log_motion = spatial_log_distribution(motion, temperature)
    return information(log_motion, spatial_log_distribution(joint, temperature), proxy)


class OrthogonalityTerms(NamedTuple):
    joint_motion: Tensor            # I(J; M)
    motion_heatmap: Tensor          # I(M; H^)
    motion_heatmap_given_joint: Tensor  # I(M; H^ | J) = I(M; (H^, J)) - I(M; J)

    @property
    def total(self) -> Tensor:
        """I(J; M | H^) = I(J; M) - I(M; H^) + I(M; H^ | J)."""
        return self.joint_motion - self.motion_heatmap + self.motion_heatmap_given_joint


def orthogonality_terms(joint: Tensor, motion: Tensor, heatmaps: Tensor, temperature: float = MI_TEMPERATURE,
                        proxy: str = "exp_neg_kl") -> OrthogonalityTerms:
    """The three terms of JM-Pose's information-orthogonality objective (module docstring).

    joint, motion [B, C, h, w]; heatmaps [B, K, h, w] (any K)."""
    if joint.shape != motion.shape:
        raise ValueError(f"orthogonality_terms: joint {tuple(joint.shape)} and motion {tuple(motion.shape)} "
                         f"must have one shape")
    if heatmaps.dim() != 4 or heatmaps.shape[0] != joint.shape[0] or heatmaps.shape[2:] != joint.shape[2:]:
        raise ValueError(f"orthogonality_terms: heatmaps must be [B, K, h, w] with B, h, w of the features "
                         f"{tuple(joint.shape)}, got {tuple(heatmaps.shape)}")
    dtype = _compute_dtype(joint)
    log_joint = spatial_log_distribution(joint, temperature)
    log_motion = spatial_log_distribution(motion, temperature)
    heat_logits = heatmaps.to(dtype).amax(dim=1, keepdim=True).flatten(2) / temperature   # [B, 1, N]
    log_heat = F.log_softmax(heat_logits, dim=-1)
    log_heat_and_joint = F.log_softmax(heat_logits + joint.to(dtype).flatten(2) / temperature, dim=-1)
    joint_motion = information(log_joint, log_motion, proxy)
    motion_joint = information(log_motion, log_joint, proxy)
    motion_heatmap = information(log_motion, log_heat, proxy)
    motion_heatmap_and_joint = information(log_motion, log_heat_and_joint, proxy)
    return OrthogonalityTerms(joint_motion, motion_heatmap, motion_heatmap_and_joint - motion_joint)


def orthogonality_objective(joint: Tensor, motion: Tensor, heatmaps: Tensor,
                            temperature: float = MI_TEMPERATURE, proxy: str = "exp_neg_kl") -> Tensor:
    """JM-Pose's L_IO = I(J; M | H^) (to minimise)."""
    return orthogonality_terms(joint, motion, heatmaps, temperature, proxy).total


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
    heatmaps plus ``aux_weight`` (2, the official weight) times the model's auxiliary loss."""
    heatmap = joint_mse_loss(output.heatmaps, target, target_weight)
    aux = output.aux_loss.to(heatmap.dtype)
    return PoseLoss(heatmap + aux_weight * aux, heatmap, aux)
