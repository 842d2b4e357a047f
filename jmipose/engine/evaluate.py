"""jmipose eval: run a model over a dataset and score it with PoseTrack AP (as poseval does).

    jmipose eval posetrack18 --checkpoint runs/posetrack18/checkpoints/best

Per person box: the window's heatmaps (flip test: the flipped window's heatmaps are flipped back,
shifted one pixel and averaged), DARK decoding, back-projection through the crop's inverse affine.
Per image: person score = box score x mean joint score above ``in_vis_threshold``, OKS-NMS. Written as
PoseTrack18 (or PoseTrack17, following the ground truth) prediction files, one per sequence, with
per-joint scores = heatmap maximum x box score (the HRNet / DCPose convention), then scored
with :func:`jmipose.metrics.posetrack_ap`, overall and on hard / easy frames when the ground truth
labels them.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jmipose.config import EvalConfig
from jmipose.data.workers import batches, make_loader
from jmipose.decode import decode_heatmaps, heatmap_to_image, merge_flipped, oks_nms, rescore
from jmipose.fileio import atomic_write_json
from jmipose.formats.fields import load_json
from jmipose.formats.posetrack import posetrack_document, prediction_annorect, prediction_annotation
from jmipose.joints import FLIP_PAIRS
from jmipose.metrics.posetrack_ap import posetrack_ap

log = logging.getLogger("jmipose.eval")

HARD_KEY = "hard"  # a ground-truth image entry with "hard": true is a hard frame


@dataclass
class PersonPrediction:
    image_id: int
    file_name: str
    keypoints: np.ndarray   # [17, 2] image pixels
    joint_scores: np.ndarray  # [17] heatmap maxima
    box_score: float
    area: float             # crop box area (OKS scale)
    score: float = 0.0      # person score after rescoring


def _heatmaps(output, which: str) -> torch.Tensor:
    return output.backbone_heatmaps if which == "backbone" else output.heatmaps


@torch.no_grad()
def predict(model: nn.Module, dataset, cfg: EvalConfig, device: torch.device | str = "cpu", *,
            progress: bool = False) -> list[PersonPrediction]:
    """Keypoints of every sample of ``dataset`` (a dataset of the sample contract, not augmented)."""
    device = torch.device(device)
    loader, tracker = make_loader(dataset, batch_size=cfg.batch_size, shuffle=False,
                                  num_workers=cfg.num_workers, pin_memory=device.type == "cuda")
    model.eval()
    people: list[PersonPrediction] = []
    stream = batches(loader, tracker)  # a dead worker is reported with the sample it was loading
    if progress:
        from tqdm.auto import tqdm

        stream = tqdm(stream, total=len(loader), desc="evaluate", unit="batch", leave=False)
    for batch in stream:
        frames = batch["frames"].to(device)
        heatmaps = _heatmaps(model(frames), cfg.heatmaps).float()
        if cfg.flip_test:
            flipped = _heatmaps(model(frames.flip(-1)), cfg.heatmaps).float()
            heatmaps = merge_flipped(heatmaps, flipped, FLIP_PAIRS, shift=cfg.shift_heatmap)
        coords, maxvals = decode_heatmaps(heatmaps.cpu(), dark=cfg.dark, blur_kernel=cfg.blur_kernel)
        h, w = heatmaps.shape[-2:]
        input_h, input_w = frames.shape[-2:]
        meta = batch["meta"]
        image_xy = heatmap_to_image(coords, meta["trans_inv"], (w, h), (input_w, input_h)).numpy()
        scale = meta["scale"].numpy().astype(np.float64)
        for i in range(len(image_xy)):
            people.append(PersonPrediction(
                image_id=int(meta["image_id"][i]), file_name=str(meta["file_name"][i]), keypoints=image_xy[i],
                joint_scores=maxvals[i].numpy().astype(np.float64), box_score=float(meta["score"][i]),
                area=float(scale[i, 0] * scale[i, 1])))
    return people


def select_people(people: list[PersonPrediction], cfg: EvalConfig) -> list[PersonPrediction]:
    """Rescore every person and keep, per image, those OKS-NMS keeps (all of them without NMS)."""
    by_image: dict[int, list[PersonPrediction]] = defaultdict(list)
    for person in people:
        rescored = rescore(np.array([person.box_score]), person.joint_scores[None], cfg.in_vis_threshold)
        person.score = float(rescored[0])
        by_image[person.image_id].append(person)
    kept = []
    for image_people in by_image.values():
        if cfg.oks_nms is None or len(image_people) < 2:
            kept.extend(image_people)
            continue
        keypoints = np.stack([np.concatenate([p.keypoints, p.joint_scores[:, None]], 1)
                              for p in image_people])
        scores = np.array([p.score for p in image_people])
        keep = oks_nms(keypoints, scores, np.array([p.area for p in image_people]), cfg.oks_nms)
        kept.extend(image_people[i] for i in keep)
    return kept


# ----- ground truth per sequence, prediction files -----

def split_sequences(gt_files: list[Path], folder: Path) -> list[Path]:
    """Per-sequence ground-truth files: files holding several sequences (a merged COCO-style file) are
    split by the folder of their image file names into ``folder``; single-sequence files are kept."""
    out = []
    for path in gt_files:
        data = load_json(path)
        if not isinstance(data, dict) or "images" not in data:
            out.append(path)
            continue
        groups: dict[str, list[dict]] = defaultdict(list)
        for image in data["images"]:
            groups[os.path.basename(os.path.dirname(str(image.get("file_name", ""))))].append(image)
        if len(groups) <= 1:
            out.append(path)
            continue
        for name, images in sorted(groups.items()):
            ids = {im["id"] for im in images}
            part = {**data, "images": images, "annotations": [a for a in data.get("annotations", [])
                                                               if a.get("image_id") in ids]}
            target = folder / f"{name}.json"
            atomic_write_json(target, part, indent=None)
            out.append(target)
    names = [p.name for p in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"ground truth: several sequence files are named {duplicates}; poseval needs one "
                         f"file per sequence with a unique name")
    return out


def write_predictions(pred_dir: Path, gt_files: list[Path], people: list[PersonPrediction]) -> list[Path]:
    """One prediction file per ground-truth sequence file, in the ground truth's layout."""
    by_id: dict[int, list[PersonPrediction]] = defaultdict(list)
    by_name: dict[str, list[PersonPrediction]] = defaultdict(list)
    for person in people:
        by_id[person.image_id].append(person)
        by_name[person.file_name].append(person)
    written = []
    for gt_path in gt_files:
        gt = load_json(gt_path)
        if isinstance(gt, dict) and "annolist" in gt:
            frames = []
            for item in gt["annolist"]:
                image = item.get("image")
                name = (image[0] if isinstance(image, list) else image or {}).get("name", "")
                rects = [prediction_annorect(i, p.keypoints, p.joint_scores, p.box_score, p.score)
                         for i, p in enumerate(by_name.get(name, []))]
                frames.append({"image": [{"name": name}], "annorect": rects})
            data = {"annolist": frames}
        else:
            annotations = []
            for image in gt["images"]:
                annotations += [prediction_annotation(p.image_id, i, p.keypoints, p.joint_scores, p.box_score, p.score)
                                for i, p in enumerate(by_id.get(image["id"], []))]
            data = posetrack_document([{k: v for k, v in im.items() if not k.startswith("ignore_regions")}
                                       for im in gt["images"]], annotations)
        target = pred_dir / gt_path.name
        atomic_write_json(target, data, indent=None)
        written.append(target)
    return written


def _has_hard_labels(gt_files: list[Path]) -> bool:
    for path in gt_files:
        data = load_json(path)
        images = data.get("images", []) if isinstance(data, dict) else []
        if any(isinstance(image, dict) and HARD_KEY in image for image in images):
            return True
    return False


def score(gt_files: list[Path], pred_dir: Path, per_sequence: bool = False,
          hard_frames: set | None = None) -> dict:
    """AP overall and, when hard frames are known (``hard_frames``: their image ids, or ``"hard": true``
    in the ground truth's image entries), on hard and on easy frames."""
    result = {"all": posetrack_ap(gt_files, pred_dir, per_sequence=per_sequence)}
    if hard_frames is not None:
        def is_hard(_, image):
            return image.get("id") in hard_frames
    elif _has_hard_labels(gt_files):
        def is_hard(_, image):
            return bool(image.get(HARD_KEY))
    else:
        return result
    result["hard"] = posetrack_ap(gt_files, pred_dir, frame_filter=is_hard)
    result["easy"] = posetrack_ap(gt_files, pred_dir, frame_filter=lambda seq, image: not is_hard(seq, image))
    return result


def evaluate_model(model: nn.Module, dataset, gt_files: list[str | os.PathLike], out_dir: str | os.PathLike,
                   cfg: EvalConfig | None = None, device: torch.device | str = "cpu", *,
                   progress: bool = False, per_sequence: bool = False,
                   hard_frames: set | None = None) -> dict:
    """Predict, write ``out_dir/predictions/<sequence>.json`` and score them against ``gt_files``
    (also on hard and easy frames when known, see :func:`score`)."""
    cfg = cfg or EvalConfig()
    out_dir = Path(out_dir)
    gt = split_sequences([Path(p) for p in gt_files], out_dir / "ground_truth")
    people = select_people(predict(model, dataset, cfg, device, progress=progress), cfg)
    write_predictions(out_dir / "predictions", gt, people)
    result = score(gt, out_dir / "predictions", per_sequence, hard_frames)
    result["people"] = len(people)
    atomic_write_json(out_dir / "ap.json", result)
    return result



# ----- from a config: evaluate("posetrack18", checkpoint="runs/posetrack18/checkpoints/best") -----

def evaluate(config, checkpoint: str | os.PathLike | None = None, overrides=(), *, split: str = "val",
             out_dir: str | os.PathLike | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Evaluate a checkpoint (or the config's model with its ``backbone_weights``) on ``split``."""
    from jmipose.config import load_config
    from jmipose.data import build_dataset
    from jmipose.engine.distributed import pick_device
    from jmipose.fileio import check_output_dir
    from jmipose.models import build_model, load_model

    config = load_config(config, overrides)
    torch_device = pick_device(device, what="device")
    out = Path(out_dir) if out_dir is not None else Path(config.output_dir) / f"eval_{split}"
    check_output_dir(out, "--out" if out_dir is not None else "output folder")  # before the work
    if checkpoint is not None:
        model = load_model(checkpoint, use_kernels=config.model.use_kernels)
    elif config.model.backbone_weights:
        model = build_model(config.model)
    else:
        raise ValueError("evaluate: give a checkpoint (--checkpoint) or set model.backbone_weights; "
                         "a model with random weights has nothing to evaluate")
    boxes = config.data.require_boxes(split) if split != "train" else config.data.boxes_for(split)
    dataset = build_dataset(config.data, split)
    result = evaluate_model(model.to(torch_device), dataset, list(dataset.annotation_files), out, config.eval,
                            torch_device, progress=progress)
    result["boxes"] = describe_boxes(boxes, split)
    atomic_write_json(out / "ap.json", result)
    return result


def describe_boxes(boxes: str | None, split: str = "val") -> str:
    """How the person boxes of an evaluation were obtained, for its report."""
    if boxes is None or boxes == "gt":
        setting = "gt" if boxes == "gt" else "null"
        return (f"ground-truth person boxes (data.{split}_boxes: {setting}): not comparable with published "
                f"results, which use detector boxes")
    return f"detector boxes from {boxes}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a YAML config file or the name of a shipped one")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.flip_test=false")
    parser.add_argument("--checkpoint", default=None,
                        help="a checkpoint (<name> of <name>.json + .safetensors)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--out", default=None, help="output folder (default: <output_dir>/eval_<split>)")
    parser.add_argument("--device", default="auto")


def main(args: argparse.Namespace) -> int:
    from jmipose.engine.distributed import pick_device
    from jmipose.metrics import format_table

    pick_device(args.device, what="--device")   # named as the option, before any work

    result = evaluate(args.config, args.checkpoint, args.overrides, split=args.split, out_dir=args.out,
                      device=args.device)
    if not result["all"]["frames"]:
        raise ValueError(f"nothing to score: no {args.split} frame of the ground truth has an annotated "
                         f"person (PoseTrack AP scores only those), so there is no AP")
    print(f"person boxes: {result['boxes']}")
    for part in ("all", "hard", "easy"):
        if part in result:
            print(f"{part} frames ({result[part]['frames']}):")
            print(format_table(result[part]))
    return 0
