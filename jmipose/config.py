"""Run configuration: YAML files loaded into nested dataclasses, with dotted command-line overrides.

    config = load_config("posetrack18", ["train.lr=2e-4", "model.backbone=w32"])
    config.train.lr          # 0.0002 (a float: the override is typed by the dataclass field)

A config is ``Config(name, output_dir, seed, model, data, train, eval)``. ``load_config`` takes a YAML
path or the name of a config shipped in ``jmipose/configs``. Unknown keys and values of the wrong type
are errors that name the dotted key; a section may leave out any field (its default applies).
``from_dict``, ``to_dict`` and ``ConfigError`` are those of ``jmipose._configbase``, the one
machinery every config dataclass (these and the model and data sections) goes through.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from jmipose._configbase import ConfigError, ConfigSection, convert, fields_of, from_dict, to_dict
from jmipose.data.config import DataConfig
from jmipose.models.config import ModelConfig

_NONE_WORDS = ("null", "none", "~", "")


# ----- dotted overrides -----

def _parse_override_value(raw: str, tp: Any, key: str) -> Any:
    """A command-line string as the field's type: YAML syntax, with strings and floats read leniently."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    if type(None) in options and raw.strip().lower() in _NONE_WORDS:
        return None
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except (yaml.YAMLError, RecursionError):
        value = raw
    if str in options and not isinstance(value, str) and not any(
            o is not str and _fits(value, o, key) for o in options if o is not type(None)):
        value = raw  # e.g. name=2024 for a string field
    return convert(value, tp, key)


def _fits(value: Any, tp: Any, key: str) -> bool:
    try:
        convert(value, tp, key)
        return True
    except ConfigError:
        return False


def override_mapping(cls: type, data: Mapping, overrides: Iterable[str]) -> dict:
    """A copy of the plain mapping ``data`` (a config of dataclass ``cls``) with ``section.field=value``
    overrides applied, each value typed by its field."""
    data = to_dict(dict(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"config override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        node, node_cls, where = data, cls, ""
        for depth, part in enumerate(parts):
            known = fields_of(node_cls)
            if part not in known:
                scope = f" of {where!r}" if where else ""
                raise ConfigError(f"config: unknown key {'.'.join(parts[:depth + 1])!r} in override "
                                  f"{item!r}; known keys{scope}: {sorted(known)}")
            tp = known[part]
            where = ".".join(parts[:depth + 1])
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(tp):
                    raise ConfigError(f"config: {where} is a section; set one of its keys "
                                      f"({where}.<key>=...)")
                node[part] = to_dict(_parse_override_value(raw, tp, where))
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"config: {where} is not a section, so {key!r} cannot be set")
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node, node_cls = child, tp
    return data


def apply_overrides(config: Any, overrides: Iterable[str]) -> Any:
    """A copy of the dataclass ``config`` with ``section.field=value`` overrides applied."""
    return from_dict(type(config), override_mapping(type(config), to_dict(config), overrides))


# ----- the training and evaluation sections -----

@dataclass
class TrainConfig(ConfigSection):
    """Training: AdamW and a multi-step schedule (defaults: lr 1e-4, wd 1e-4, 20 epochs, x0.1 at 5/10/15,
    the schedule the authors' JMI config writes; their scheduler does not read those keys, so the
    shipped PoseTrack configs set what their code runs: constant lr, torch's default weight decay 0.01,
    see docs/FIDELITY.md).

    ``batch_size`` is per process. ``grad_clip``: max global gradient norm (None: off). ``amp``:
    ``auto`` (bf16 on GPUs that have it, else fp16; off on CPU), ``bf16``, ``fp16`` or ``off``.
    ``val_every``: validate (AP) every N epochs (0: never). ``checkpoint_every``: also checkpoint every
    N steps inside an epoch (0: at epoch ends only). ``aux_weight``: weight of the auxiliary objective
    (2 in the authors' training function). ``grad_norm_every``: measure and log the gradient norm of
    each loss term at the first step and then every N steps (None: every ``log_every`` steps; 0: the
    first step only; each measurement costs one extra backward pass per term). ``max_steps``: stop
    after this many optimizer steps in total (None: run all epochs; for smoke runs).
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (5, 10, 15)
    lr_factor: float = 0.1
    grad_clip: float | None = None
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    aux_weight: float = 2.0
    val_every: int = 1
    checkpoint_every: int = 0
    num_workers: int = 2
    deterministic: bool = True
    log_every: int = 10
    grad_norm_every: int | None = None
    progress: bool = True
    device: str = "auto"
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config: train.{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_norm_every is not None and self.grad_norm_every < 0:
            raise ConfigError(f"config: train.grad_norm_every must be >= 0 or null, got {self.grad_norm_every}")
        for name in ("val_every", "checkpoint_every", "num_workers", "log_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"config: train.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 < self.lr_factor <= 1:
            raise ConfigError(f"config: train.lr must be > 0, train.weight_decay >= 0 and train.lr_factor "
                              f"in (0, 1], got {self.lr}, {self.weight_decay}, {self.lr_factor}")
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"config: train.milestones must be increasing, got {list(self.milestones)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"config: train.grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclass
class EvalConfig(ConfigSection):
    """Evaluation (defaults: the official JMI evaluation: shifted flip test, DARK, OKS-NMS 0.9).

    ``oks_nms``: OKS threshold (None: no NMS). ``in_vis_threshold``: joints above it make a person's
    score. ``heatmaps``: ``final`` or ``backbone`` (the key frame's backbone heatmaps of the same model).
    """

    flip_test: bool = True
    shift_heatmap: bool = True
    dark: bool = True
    blur_kernel: int = 11
    oks_nms: float | None = 0.9
    in_vis_threshold: float = 0.2
    heatmaps: Literal["final", "backbone"] = "final"
    batch_size: int = 16
    num_workers: int = 2

    def __post_init__(self) -> None:
        if self.blur_kernel % 2 != 1 or self.blur_kernel < 3:
            raise ConfigError(f"config: eval.blur_kernel must be an odd size >= 3, got {self.blur_kernel}")
        if self.batch_size < 1 or self.num_workers < 0:
            raise ConfigError("config: eval.batch_size must be >= 1 and eval.num_workers >= 0")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently, so a duplicated ``lr:`` would quietly replace the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(source: str | Path) -> dict:
    """A YAML mapping from a path, or from ``jmipose/configs/<source>.yaml`` when ``source`` is a name."""
    path = Path(source)
    if not path.suffix and not path.exists():
        shipped = resources.files("jmipose") / "configs" / f"{source}.yaml"
        if not shipped.is_file():
            names = sorted(p.name[:-5] for p in (resources.files("jmipose") / "configs").iterdir()
                           if p.name.endswith(".yaml"))
            raise ConfigError(f"config: no file {source!r} and no shipped config of that name "
                              f"(shipped: {names})")
        text, where = shipped.read_text(encoding="utf-8"), f"jmipose/configs/{source}.yaml"
    else:
        if not path.is_file():
            raise ConfigError(f"config: no such file {path}")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:   # PyYAML's own text spreads over several lines: one line here
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        context = f" {e.context}" if e.context else ""
        raise ConfigError(f"config: {where}{at}: not valid YAML ({e.problem}{context})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config: {where} is not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise ConfigError(f"config: {where} is nested too deeply to be a config") from None
    if data is None:
        raise ConfigError(f"config: {where} is empty; give at least one section (model, data, train, eval) "
                          f"or start from a shipped config ({', '.join(shipped_configs())})")
    if not isinstance(data, dict):
        raise ConfigError(f"config: {where} must hold a mapping at the top level, got {type(data).__name__}")
    return data


# ----- the whole run -----


@dataclass
class Config(ConfigSection):
    """A run: ``model`` (jmipose.models.ModelConfig), ``data`` (jmipose.data.DataConfig), ``train``,
    ``eval``; ``seed`` seeds the model's initialisation, the sampler and (mixed with ``data.seed``) the
    augmentation; ``output_dir`` defaults to ``runs/<name>``."""

    name: str = "jmipose"
    output_dir: str | None = None
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.output_dir is None:
            self.output_dir = f"runs/{self.name}"
        frames, key = len(self.data.window) + 1, sum(1 for offset in self.data.window if offset < 0)
        if (self.model.num_frames, self.model.key_index) != (frames, key):
            raise ConfigError(f"config: model.num_frames={self.model.num_frames} and model.key_index="
                              f"{self.model.key_index} must match data.window={list(self.data.window)} "
                              f"({frames} frames, key frame at index {key})")


def load_config(source: str | Path | Config | Mapping, overrides: Iterable[str] = ()) -> Config:
    """A :class:`Config` from a YAML path, a shipped config name, a mapping or a Config, plus overrides."""
    overrides = list(overrides)
    if isinstance(source, Config):
        return apply_overrides(source, overrides) if overrides else source
    # overrides go into the plain mapping first, so fields derived in __post_init__ (heatmap_size from
    # image_size, output_dir from name) follow them
    data = source if isinstance(source, Mapping) else read_yaml(source)
    return from_dict(Config, override_mapping(Config, data, overrides))


def shipped_configs() -> list[str]:
    """Names of the configs in ``jmipose/configs``."""
    folder = resources.files("jmipose") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
