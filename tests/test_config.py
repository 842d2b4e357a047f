"""YAML configs, typed dotted overrides and the errors that name the key."""

from __future__ import annotations

import json

import pytest

from jmipose.config import (Config, ConfigError, apply_overrides, from_dict, load_config, shipped_configs,
                            to_dict)


def test_shipped_posetrack_configs_take_the_authors_choices():
    # docs/FIDELITY.md cites where each value comes from
    assert set(shipped_configs()) >= {"posetrack17", "posetrack18", "posetrack21", "synthetic"}
    for name in ("posetrack17", "posetrack18", "posetrack21"):
        config = load_config(name)
        assert config.name == name and config.output_dir == f"runs/{name}"
        assert config.data.version == name[-2:]
        t = config.train
        # their scheduler reads LR_STEP (left at the code's default 90/110): constant over 20 epochs; their
        # AdamW gets no weight_decay: torch's default 0.01
        assert (t.lr, t.weight_decay, t.epochs, tuple(t.milestones), t.aux_weight, t.batch_size) == \
            (1e-4, 0.01, 20, (), 2.0, 27)
        m = config.model
        assert (m.variant, m.backbone, m.backbone_weights) == ("jmi", "w48", None)
        assert m.resolved().freeze_backbone and not m.allow_random_backbone
        assert (m.stage1_source, m.attention_axis, m.gate_conv, m.offset_groups, m.gather_dilation,
                m.mask_activation, m.aux_estimator) == ("transition1", "channel", False, 12, 1, "none", "official")
        assert config.data.val_boxes is None and not config.data.use_joint_weights  # boxes must be given
        assert (config.eval.flip_test, config.eval.shift_heatmap, config.eval.dark, config.eval.oks_nms) == \
            (True, True, True, 0.9)
        assert config.data.image_size == (288, 384) and config.data.heatmap_size == (72, 96)


def test_posetrack_configs_refuse_a_random_frozen_backbone_and_missing_boxes(tmp_path):
    from jmipose.engine.train import make_validator, train
    from jmipose.models import build_model

    config = load_config("posetrack18", ["model.backbone=tiny", "model.offset_groups=8"])
    with pytest.raises(ValueError, match="backbone_weights is not set"):
        build_model(config.model)
    with pytest.raises(ValueError, match="model.backbone_weights"):
        train("posetrack18", ["model.backbone=tiny", f"output_dir={tmp_path}"])
    build_model(apply_overrides(config, ["model.allow_random_backbone=true"]).model)  # the explicit opt-out
    with pytest.raises(ValueError, match="data.val_boxes is not set"):
        make_validator(config, "cpu")
    assert apply_overrides(config, ["data.val_boxes=gt"]).data.require_boxes("val") == "gt"


def test_overrides_are_typed_by_the_field():
    config = load_config("posetrack18", ["train.lr=2e-4", "train.milestones=[3, 6]", "model.backbone=w32",
                                         "eval.oks_nms=null", "data.image_size=[96,128]", "train.grad_clip=1",
                                         "name=2024", "data.augment.flip_prob=0"])
    assert config.train.lr == 2e-4 and isinstance(config.train.lr, float)
    assert config.train.milestones == (3, 6) and config.model.backbone == "w32"
    assert config.eval.oks_nms is None and config.train.grad_clip == 1.0
    assert config.name == "2024" and config.output_dir == "runs/2024"  # derived after the override
    assert config.data.heatmap_size == (24, 32)  # follows the overridden image_size
    assert config.data.augment.flip_prob == 0.0
    again = apply_overrides(config, ["train.epochs=3"])
    assert again.train.epochs == 3 and again.data.heatmap_size == (24, 32)


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown key 'train.lrr'"),
    ("data.augment.fliip=1", "unknown key 'data.augment.fliip'"),
    ("nope.x=1", "unknown key 'nope'"),
    ("train.lr=abc", "train.lr must be a number"),
    ("train.epochs=1.5", "train.epochs must be an integer"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.amp=fp8", "train.amp must be one of"),
    ("train.deterministic=maybe", "train.deterministic must be true or false"),
    ("train=3", "train is a section"),
    ("train.lr.x=1", "train.lr is not a section"),
    ("model.variant=xyz", "model.variant must be one of"),
    ("data.window=[-1, 1]", "must match data.window"),
    ("train.lr", "must look like section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config("posetrack18", [override])


def test_yaml_files_and_their_errors(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: mine\ntrain:\n  lr: 1e-3\n  batch_size: 4\nmodel:\n  backbone: tiny\n")
    config = load_config(path)
    assert config.train.lr == 1e-3 and config.train.batch_size == 4 and config.model.backbone == "tiny"
    path.write_text("train:\n  lr: 1e-3\n  bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'train.bogus'"):
        load_config(path)
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(path)
    with pytest.raises(ConfigError, match="no shipped config of that name"):
        load_config("posetrack99")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_through_plain_data():
    config = load_config("synthetic")
    data = json.loads(json.dumps(to_dict(config)))
    assert from_dict(Config, data) == config


def test_synthetic_config_trains_on_the_demos_data_settings(tmp_path):
    """configs/synthetic.yaml is the one-stage version of ``jmipose demo``: same crops, targets and
    augmentation as the demo's own data config."""
    from jmipose.engine.demo import DemoPlan, _data_config

    shipped = load_config("synthetic").data
    demo = _data_config(tmp_path, DemoPlan(), seed=0)
    assert tuple(shipped.image_size) == tuple(demo.image_size)
    for name in ("sigma", "unbiased_targets", "augment", "version"):
        assert getattr(shipped, name) == getattr(demo, name), name
