"""Heatmaps to keypoints: argmax + DARK, flip test, back-projection, rescoring and OKS-NMS.

The conventions are those of the HRNet / DCPose evaluation code that the official JMI code reuses
(its flip test with the one-pixel shift and its DARK decoding: docs/FIDELITY.md):

- DARK (Zhang et al., "Distribution-Aware Coordinate Representation", CVPR 2020): blur each heatmap
  with an 11x11 Gaussian (OpenCV's sigma for that size, 2.0), rescale it to its original maximum,
  take the log, and refine the integer argmax ``m`` by one Newton step ``m - H^-1 g`` with central
  differences (``g`` with step 1, the Hessian with step 2), only where the 5x5 stencil fits.
- Flip test: the heatmaps of the horizontally flipped input are flipped back, their left/right joint
  channels swapped, shifted one pixel to the right (column 0 keeps its value) and averaged with the
  heatmaps of the original input.
- Coordinates: heatmap pixel ``(x, y)`` is input-crop pixel ``(x * W / w, y * H / h)``, mapped to the
  image by ``trans_inv`` (the [2, 3] affine of each sample's ``meta``).
- Scores: the per-joint score is the heatmap maximum (times the box score when written out); a
  person's score is ``box score x mean of its joint scores above 0.2``; OKS-NMS at 0.9 with the COCO
  sigmas in PoseTrack order and the crop-box area.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from jmipose.joints import FLIP_PAIRS, OKS_SIGMAS, flip_permutation

DARK_KERNEL = 11


def _check_heatmaps(heatmaps: torch.Tensor, name: str = "heatmaps") -> None:
    if not isinstance(heatmaps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, J, h, w], got {type(heatmaps).__name__}")
    if heatmaps.dim() != 4 or heatmaps.shape[-1] < 1 or heatmaps.shape[-2] < 1:
        raise ValueError(f"{name} must have shape [B, J, h, w] with h, w >= 1, got {tuple(heatmaps.shape)}")
    if not heatmaps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {heatmaps.dtype}")


def argmax_coords(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer peak per heatmap: coords [B, J, 2] (x, y) float, maxvals [B, J].

    As the HRNet / DCPose code (get_max_preds): the first maximum in row-major order; coordinates are zeroed where the
    maximum is not positive (an empty heatmap gives (0, 0) with its maximum as score).
    """
    _check_heatmaps(heatmaps)
    b, j, h, w = heatmaps.shape
    maxvals, index = heatmaps.reshape(b, j, h * w).max(dim=2)
    coords = torch.stack(((index % w), torch.div(index, w, rounding_mode="floor")), dim=-1).to(heatmaps.dtype)
    return coords * (maxvals > 0).unsqueeze(-1).to(coords.dtype), maxvals


def gaussian_kernel_1d(size: int, dtype=torch.float64) -> torch.Tensor:
    """OpenCV's ``getGaussianKernel(size, 0)`` for an odd size >= 9.

    sigma = 0.3 ((size - 1) / 2 - 1) + 0.8 (11 -> 2.0)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return (kernel / kernel.sum()).to(dtype)


def dark_blur(heatmaps: torch.Tensor, kernel: int = DARK_KERNEL) -> torch.Tensor:
    """Gaussian blur with zero borders, each heatmap rescaled to its original maximum."""
    if kernel % 2 != 1 or kernel < 3:
        raise ValueError(f"kernel must be an odd size >= 3, got {kernel}")
    b, j, h, w = heatmaps.shape
    k1 = gaussian_kernel_1d(kernel, heatmaps.dtype).to(heatmaps.device)
    flat = heatmaps.reshape(b * j, 1, h, w)
    pad = kernel // 2
    blurred = F.conv2d(F.pad(flat, (pad, pad, 0, 0)), k1.view(1, 1, 1, kernel))
    blurred = F.conv2d(F.pad(blurred, (0, 0, pad, pad)), k1.view(1, 1, kernel, 1)).reshape(b, j, h, w)
    original_max = heatmaps.amax(dim=(2, 3), keepdim=True)
    blurred_max = blurred.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(blurred_max != 0, original_max / blurred_max, torch.zeros_like(blurred_max))
    return blurred * scale


def dark_refine(heatmaps: torch.Tensor, coords: torch.Tensor, blur_kernel: int | None = DARK_KERNEL
                ) -> torch.Tensor:
    """One Newton step on ``log(blur(heatmap))`` from the integer ``coords`` [B, J, 2]; float64 math."""
    hm = heatmaps.detach().to(torch.float64)
    if blur_kernel:
        hm = dark_blur(hm, blur_kernel)
    log_hm = torch.log(hm.clamp_min(1e-10))
    b, j, h, w = hm.shape
    px, py = coords[..., 0].long(), coords[..., 1].long()
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    pxc, pyc = px.clamp(2, max(w - 3, 2)), py.clamp(2, max(h - 3, 2))
    flat = log_hm.reshape(b, j, h * w)

    def at(dx: int, dy: int) -> torch.Tensor:
        index = ((pyc + dy).clamp(0, h - 1) * w + (pxc + dx).clamp(0, w - 1)).unsqueeze(-1)
        return flat.gather(2, index).squeeze(-1)

    centre = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    usable = inside & (det != 0)
    safe_det = torch.where(usable, det, torch.ones_like(det))
    # -H^{-1} g with H = [[dxx, dxy], [dxy, dyy]]
    off_x = -(dyy * dx - dxy * dy) / safe_det
    off_y = -(-dxy * dx + dxx * dy) / safe_det
    offset = torch.stack((off_x, off_y), dim=-1) * usable.unsqueeze(-1)
    return (coords.to(torch.float64) + offset).to(coords.dtype)


def decode_heatmaps(heatmaps: torch.Tensor, *, dark: bool = True, blur_kernel: int | None = DARK_KERNEL
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel peaks in heatmap pixels [B, J, 2] (x, y) and per-joint scores (maxima) [B, J]."""
    coords, maxvals = argmax_coords(heatmaps)
    if dark:
        coords = dark_refine(heatmaps, coords, blur_kernel)
    return coords, maxvals


def flip_back(heatmaps: torch.Tensor, flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS) -> torch.Tensor:
    """Heatmaps of a horizontally flipped input, mirrored back with left/right channels swapped."""
    _check_heatmaps(heatmaps)
    perm = flip_permutation(heatmaps.shape[1], tuple(flip_pairs))
    return heatmaps.flip(-1)[:, perm]


def merge_flipped(heatmaps: torch.Tensor, flipped_heatmaps: torch.Tensor,
                  flip_pairs: Sequence[tuple[int, int]] = FLIP_PAIRS, shift: bool = True) -> torch.Tensor:
    """Average the heatmaps with those of the flipped input (flipped back, shifted one pixel right)."""
    _check_heatmaps(flipped_heatmaps, "flipped_heatmaps")
    if heatmaps.shape != flipped_heatmaps.shape:
        raise ValueError(f"heatmaps {tuple(heatmaps.shape)} and flipped_heatmaps "
                         f"{tuple(flipped_heatmaps.shape)} must have the same shape")
    back = flip_back(flipped_heatmaps, flip_pairs)
    if shift:
        back = torch.cat((back[..., :1], back[..., :-1]), dim=-1)
    return (heatmaps + back) * 0.5


def heatmap_to_image(coords: torch.Tensor, trans_inv: torch.Tensor, heatmap_size: tuple[int, int],
                     input_size: tuple[int, int]) -> torch.Tensor:
    """Heatmap pixels [B, J, 2] -> image pixels through the input crop; sizes are (width, height)."""
    if trans_inv.shape[-2:] != (2, 3) or trans_inv.shape[0] != coords.shape[0]:
        raise ValueError(f"trans_inv must have shape [B, 2, 3] with B = {coords.shape[0]}, "
                         f"got {tuple(trans_inv.shape)}")
    stride = torch.tensor([input_size[0] / heatmap_size[0], input_size[1] / heatmap_size[1]],
                          dtype=torch.float64, device=coords.device)
    crop = coords.to(torch.float64) * stride
    affine = trans_inv.to(device=coords.device, dtype=torch.float64)
    return crop @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]


def rescore(box_scores: np.ndarray, joint_scores: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Person score: box score x mean of the joint scores above ``threshold`` (0 when none is)."""
    joint_scores = np.asarray(joint_scores, dtype=np.float64)
    valid = joint_scores > threshold
    count = valid.sum(axis=-1)
    mean = np.where(count > 0, (joint_scores * valid).sum(axis=-1) / np.maximum(count, 1), 0.0)
    return np.asarray(box_scores, dtype=np.float64) * mean


def oks_iou(reference: np.ndarray, others: np.ndarray, reference_area: float, other_areas: np.ndarray,
            sigmas: Sequence[float] = OKS_SIGMAS) -> np.ndarray:
    """Object keypoint similarity of one pose [J, 2+] with each of ``others`` [N, J, 2+]."""
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    d2 = ((others[:, :, :2] - reference[None, :, :2]) ** 2).sum(-1)
    scale = (reference_area + np.asarray(other_areas, dtype=np.float64)) / 2 + np.spacing(1)
    e = d2 / variances[None] / scale[:, None] / 2
    return np.exp(-e).mean(axis=1) if e.shape[1] else np.zeros(len(others))


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, threshold: float = 0.9,
            sigmas: Sequence[float] = OKS_SIGMAS) -> list[int]:
    """Greedy NMS on OKS: keep the best-scored pose, drop poses with OKS > threshold to it, repeat."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[1] != len(sigmas):
        raise ValueError(f"keypoints must have shape [N, {len(sigmas)}, 2 or 3], got {keypoints.shape}")
    if len(keypoints) == 0:
        return []
    order = np.argsort(np.asarray(scores, dtype=np.float64))[::-1]
    keep = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        areas = np.asarray(areas, dtype=np.float64)
        similarity = oks_iou(keypoints[best], keypoints[rest], float(areas[best]), areas[rest], sigmas)
        order = rest[similarity <= threshold]
    return keep

