"""--val-from-train: whole UCF groups of the training list held out for model selection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from loader import LoaderConfig, LoaderError
from loader.source import held_out_groups
from train.config import TrainConfig


def group(key: str) -> str:
    return re.search(r"_(g\d+)_c\d+$", key).group(1)


def test_held_out_groups_are_whole_seeded_and_sized() -> None:
    keys = [
        f"v_{c}_g{g:02d}_c{i:02d}" for c in ("A", "B", "C") for g in range(8, 26) for i in (1, 2)
    ]
    held = held_out_groups(keys, 0.2)
    assert len(held) == round(0.2 * 18) == 4 and held <= {f"g{g:02d}" for g in range(8, 26)}
    assert held_out_groups(list(reversed(keys)), 0.2) == held  # seeded, order-independent
    assert len(held_out_groups(keys, 0.01)) == 1  # at least one group
    assert len(held_out_groups(keys, 0.99)) == 17  # and never all of them
    assert len(held_out_groups(["x", "y", "z", "w"], 0.5)) == 2  # no gGG: one group per video
    with pytest.raises(LoaderError, match="need two or more"):
        held_out_groups(["v_A_g01_c01", "v_B_g01_c02"], 0.5)


def test_holdout_config_is_checked() -> None:
    base = {"manifests": Path("/nonexistent"), "num_threads": 1}
    with pytest.raises(ValueError, match="goes with part 'kept' or 'held'"):
        LoaderConfig(holdout=0.2, **base)
    with pytest.raises(ValueError, match="goes with part 'kept' or 'held'"):
        LoaderConfig(part="held", **base)
    with pytest.raises(ValueError, match="val_from_train must be in"):
        TrainConfig(val_from_train=1.0)
    assert "val_from_train" in TrainConfig().identity()  # another training set: another run


def test_loaders_split_the_training_list_by_group(prepared) -> None:
    from train.run import open_loaders

    cfg = TrainConfig(model="tiny", manifests=prepared.manifests, shards=prepared.shards,
                      batch_size=4, num_threads=1, val_from_train=0.3)  # fmt: skip
    train, val = open_loaders(cfg)
    with train, val:
        kept = {r.key for r in train.dataset.records}
        held = {r.key for r in val.dataset.records}
        assert val.cfg.subset == "train" and val.cfg.mode == "clip"
        assert train.cfg.clips_device() == val.cfg.clips_device() == "host"  # a CPU run
        # NVDEC would plan no epoch past the run's last (epochs 0 .. cfg.epochs - 1)
        assert train.cfg.gpu_last_epoch == val.cfg.gpu_last_epoch == cfg.epochs - 1
    from train.evaluation import open_eval_loader

    with open_eval_loader(cfg, "clip", {}) as test:  # one pass over the test split
        assert test.cfg.gpu_last_epoch == 0 and test.cfg.subset == "test"
    everything = {ln.split('"key": "')[1].split('"')[0]
                  for ln in prepared.train_manifest.read_text().splitlines()}  # fmt: skip
    assert kept | held == everything and not kept & held
    assert not {group(k) for k in kept} & {group(k) for k in held}  # whole groups only
    assert len({group(k) for k in held}) == round(0.3 * len({group(k) for k in everything}))
    test_keys = prepared.test_manifest.read_text()
    assert not [k for k in held if k in test_keys]  # the test split stays unseen


def test_cli_val_from_train_range(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli.main, ["train", "--val-from-train", "1", "--run-dir", str(tmp_path / "r")]
    )
    assert res.exit_code == 2 and "--val-from-train" in res.output
