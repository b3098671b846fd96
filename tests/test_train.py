"""Training loop: loss goes down, exact resume, run-dir and checkpoint safety, AMP, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest
from click.testing import CliRunner

import cli
from train import checkpoint as ck
from train.config import TrainConfig
from train.data import ArrayClips, random_clips
from train.loop import Amp, train_one_epoch
from train.models import create_model
from train.run import build_optimizer, fit

CLASSES = ["Apply", "Brush", "Cut", "Dive"]


@pytest.fixture(scope="module")
def data() -> tuple[ArrayClips, ArrayClips]:
    x, y = random_clips(16, len(CLASSES), size=32, seed=0)
    return (
        ArrayClips(x, y, CLASSES, batch_size=4, shuffle=True, seed=3),
        ArrayClips(x, y, CLASSES, batch_size=8, keys=[f"v{i // 2}" for i in range(16)]),
    )


def tiny_cfg(run_dir: Path, **kw) -> TrainConfig:
    opts = dict(model="tiny", batch_size=4, size=32, epochs=2, checkpoint_every=1, log_every=2)
    return TrainConfig(run_dir=run_dir, **{**opts, **kw})


def test_a_few_steps_lower_the_loss_on_a_fixed_batch() -> None:
    paddle.seed(0)
    x, y = random_clips(4, 4, size=32, seed=1)
    batch = ArrayClips(x, y, CLASSES, batch_size=4)
    model = create_model("tiny", 4)
    opt, _ = build_optimizer(TrainConfig(model="tiny", lr=0.01), model)
    losses = [
        train_one_epoch(model, opt, batch.epoch(0), Amp(), log_every=100)["loss"] for _ in range(8)
    ]
    assert losses[-1] < 0.5 * losses[0], losses


def test_metrics_identical_with_and_without_per_step_syncs(data) -> None:
    """Reading the loss every step (on_step, log_every 1) or only at the end: same numbers."""

    def epoch(**kw) -> dict:
        paddle.seed(0)
        model = create_model("tiny", len(CLASSES))
        opt, _ = build_optimizer(tiny_cfg(Path("unused")), model)
        return train_one_epoch(model, opt, data[0].epoch(0), Amp(), **kw)

    seen: list[float] = []
    synced = epoch(log_every=1, on_step=lambda step, loss: seen.append(loss))
    unsynced = epoch(log_every=1000)
    assert len(seen) == 4 and all(np.isfinite(seen))
    for key in ("loss", "acc", "clips"):
        assert synced[key] == unsynced[key], key
    assert np.isclose(synced["loss"], np.mean(seen))  # 4 equal batches: mean of step losses


def test_compile_trains_like_eager(tmp_path: Path, data) -> None:
    """--compile (paddle.jit.to_static) gives the eager run's metrics on the same data."""
    runs = {}
    for compiled in (False, True):
        run = fit(tiny_cfg(tmp_path / str(compiled), epochs=1, compile=compiled),
                  train_data=data[0], val_data=data[1])  # fmt: skip
        runs[compiled] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert np.isclose(runs[False][key], runs[True][key], rtol=1e-4), key


def test_fit_writes_run_outputs(tmp_path: Path, data) -> None:
    run = fit(tiny_cfg(tmp_path / "run"), train_data=data[0], val_data=data[1])
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_clips_per_s",
                "train_data_wait_pct", "train_time_s", "time_s"):  # fmt: skip
        assert key in lines[0]
    assert 0 <= lines[0]["train_host_steal_pct"] <= 100  # Linux: the hypervisor's share
    config = json.loads((run / "config.json").read_text())
    assert config["num_classes"] == 4 and config["model"] == "tiny" and config["shortcut"] == "A"
    state = ck.load_checkpoint(run / ck.LAST)
    assert state["config"] == config and state["epoch"] == 2 and state["classes"] == CLASSES
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "best_acc"} <= set(state)
    assert (run / ck.BEST).is_file()
    assert not list(run.glob("*.tmp"))
    assert "epoch 2: train_loss" in (run / "train.log").read_text()


def test_resume_continues_exactly(tmp_path: Path, data) -> None:
    whole = fit(tiny_cfg(tmp_path / "whole"), train_data=data[0], val_data=data[1])
    part = tiny_cfg(tmp_path / "part", epochs=1)
    fit(part, train_data=data[0], val_data=data[1])
    fit(part.replace(epochs=2), resume=True, train_data=data[0], val_data=data[1])
    a = [json.loads(ln) for ln in (whole / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(ln) for ln in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == 2
    for key in ("train_loss", "val_loss", "train_acc", "lr"):
        assert b[1][key] == pytest.approx(a[1][key], rel=1e-6, abs=1e-7), key
    wa = ck.load_checkpoint(whole / ck.LAST)["model"]
    wb = ck.load_checkpoint(tmp_path / "part" / ck.LAST)["model"]
    for k in wa:
        np.testing.assert_allclose(np.asarray(wa[k]), np.asarray(wb[k]), rtol=1e-5, atol=1e-6)


def test_multistep_schedule_lowers_lr(tmp_path: Path, data) -> None:
    cfg = tiny_cfg(tmp_path / "ms", epochs=3, schedule="multistep", milestones=(1, 2), max_steps=1)
    run = fit(cfg, train_data=data[0], val_data=None)
    lrs = [json.loads(ln)["lr"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.01, 0.001, 0.0001])


def test_run_dir_of_another_run_is_refused(tmp_path: Path, data) -> None:
    fit(tiny_cfg(tmp_path / "run", epochs=1, max_steps=1), train_data=data[0], val_data=None)
    with pytest.raises(ValueError, match=r"config\.json: run directory holds a different run "
                       r"\(model: 'tiny' != 'r3d10'; shortcut: 'A' != 'A-hara'\)"):  # fmt: skip
        fit(tiny_cfg(tmp_path / "run", model="r3d10"), train_data=data[0])
    with pytest.raises(ValueError, match=r"last\.pdckpt: .*pass --resume"):
        fit(tiny_cfg(tmp_path / "run", epochs=1, max_steps=1), train_data=data[0])
    with pytest.raises(ck.CheckpointError, match=r"last\.pdckpt: no checkpoint to resume"):
        fit(tiny_cfg(tmp_path / "empty"), resume=True, train_data=data[0])


def test_checkpoint_errors(tmp_path: Path, data) -> None:
    run = fit(tiny_cfg(tmp_path / "run", epochs=1, max_steps=1), train_data=data[0], val_data=None)
    bad = tmp_path / "bad.pdckpt"
    bad.write_bytes((run / ck.LAST).read_bytes()[:1000])  # truncated: a crash mid-copy
    with pytest.raises(ck.CheckpointError, match=r"bad\.pdckpt: not a readable checkpoint"):
        ck.load_checkpoint(bad)
    with pytest.raises(ck.CheckpointError, match="not found"):
        ck.load_checkpoint(tmp_path / "missing.pdckpt")
    with pytest.raises(ck.CheckpointError, match="checkpoint has 4 classes but the data has 101"):
        ck.model_from_checkpoint(run / ck.LAST, num_classes=101)
    weights = ck.load_checkpoint(run / ck.LAST)["model"]
    with pytest.raises(ck.CheckpointError, match="another depth, width or class count"):
        ck.load_model_weights(create_model("tiny", 5), weights, run / ck.LAST)
    with pytest.raises(ck.CheckpointError, match="another architecture"):
        ck.load_model_weights(create_model(18, 4, widths=(8, 16, 32, 64)), weights, run / ck.LAST)


def test_amp_modes_pass_conv3d_white_list(monkeypatch: pytest.MonkeyPatch, data, tmp_path) -> None:
    seen = []
    real = paddle.amp.auto_cast

    def spy(**kw):
        seen.append(kw)
        return real(**kw)

    monkeypatch.setattr(paddle.amp, "auto_cast", spy)
    for mode, dtype in (("fp16", "float16"), ("bf16", "bfloat16")):
        # A CPU Paddle turns autocast off; what runs here is the wiring, scaler and checkpoint.
        fit(tiny_cfg(tmp_path / mode, amp=mode, epochs=1, max_steps=1), train_data=data[0])
        assert seen[-1]["dtype"] == dtype and "conv3d" in seen[-1]["custom_white_list"]
        assert seen[-1]["level"] == "O1"
    assert Amp("fp16").scaler is not None


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(schedule="multistep")
    with pytest.raises(ValueError, match="amp must be one of"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="valid choices"):
        TrainConfig(model="r3d11")
    cfg = TrainConfig(model=101)
    assert cfg.model == "r3d101" and cfg.shortcut == "B" and cfg.depth == 101
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_train_refuses_another_run(tmp_path: Path, data) -> None:
    fit(tiny_cfg(tmp_path / "run", epochs=1, max_steps=1), train_data=data[0], val_data=None)
    res = CliRunner().invoke(
        cli.main, ["train", "--depth", "18", "--run-dir", str(tmp_path / "run")]
    )
    assert res.exit_code == 1
    assert "config.json: run directory holds a different run" in res.output
    assert "choose another --run-dir" in res.output
    res = CliRunner().invoke(cli.main, ["train", "--model", "r3d19"])
    assert res.exit_code == 2 and "valid choices" in res.output
    res = CliRunner().invoke(cli.main, ["train", "--resume", "--run-dir", str(tmp_path / "none")])
    assert res.exit_code == 1 and "no checkpoint to resume" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--milestones", "10,x"], "is not a list of epochs"),
        (["--depth", "18", "--model", "tiny"], "give --model or --depth, not both"),
        (["--amp", "fp8"], "'fp8' is not one of"),
        (["--schedule", "multistep"], "needs milestones"),
        (["--scales", "1,x"], "is not a list of scales in (0, 1]"),
        (["--scales", "1,1.5"], "is not a list of scales in (0, 1]"),
        (["--shortcut", "C"], "'C' is not one of 'A', 'A-hara', 'B'"),
        (["--loader-sms", "2"], "loader_sms needs device 'gpu'"),
        (["--loader-sms", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_cli_train_bad_options(args: list[str], message: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli.main, ["train", "--run-dir", str(tmp_path / "r"), *args])
    assert res.exit_code == 2 and message in res.output, res.output


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="CPU-only Paddle builds")
def test_gpu_device_on_cpu_paddle_is_a_clear_error(tmp_path: Path, data) -> None:
    with pytest.raises(RuntimeError, match="--device gpu needs a CUDA build of Paddle"):
        fit(tiny_cfg(tmp_path / "g", device="gpu"), train_data=data[0])
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize(
    "args",
    [["--lr", "nan"], ["--lr", "-1"], ["--lr", "inf"], ["--lr", "0"], ["--momentum", "1.5"],
     ["--weight-decay", "nan"], ["--milestones=-5,3"], ["--milestones", "30,20"]],
)  # fmt: skip
def test_cli_train_refuses_non_finite_and_negative_values(args: list[str], tmp_path: Path) -> None:
    res = CliRunner().invoke(cli.main, ["train", "--run-dir", str(tmp_path / "r"), *args])
    assert res.exit_code == 2 and ("--lr" in res.output or args[0].split("=")[0] in res.output)
    assert not (tmp_path / "r").exists()


def test_config_refuses_non_finite_values() -> None:
    for bad in ({"lr": float("nan")}, {"lr": -1.0}, {"momentum": float("inf")}, {"gamma": 2.0},
                {"milestones": (-5, 3)}):  # fmt: skip
        with pytest.raises(ValueError, match="must be"):
            TrainConfig(**bad)


def test_a_diverged_run_is_an_error_and_saves_nothing(
    tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch
) -> None:
    import copy

    import train.run

    real = train.run.build_optimizer

    def nan_lr(cfg, model):  # a NaN learning rate past validation: a run that diverges
        cfg = copy.copy(cfg)
        object.__setattr__(cfg, "lr", float("nan"))
        return real(cfg, model)

    monkeypatch.setattr(train.run, "build_optimizer", nan_lr)
    run = tmp_path / "nan"
    cfg = tiny_cfg(run, epochs=1, max_steps=1)  # one step: its loss is still finite
    with pytest.raises(RuntimeError, match="non-finite logits"):
        fit(cfg, train_data=data[0], val_data=data[1])  # validation would have said acc 1.0
    assert not (run / ck.BEST).exists() and not (run / ck.LAST).exists()
    with pytest.raises(RuntimeError, match="epoch 1: weights hold NaN or inf"):
        fit(tiny_cfg(tmp_path / "noval", epochs=1, max_steps=1), train_data=data[0])
    assert not (tmp_path / "noval" / ck.LAST).exists()


def test_checkpoint_weights_checksum(tmp_path: Path, data, caplog) -> None:
    run = fit(tiny_cfg(tmp_path / "run", epochs=1, max_steps=1), train_data=data[0], val_data=None)
    state = ck.load_checkpoint(run / ck.LAST)
    assert state[ck.MODEL_SHA256] == ck.weights_sha256(state["model"])
    big = max(state["model"], key=lambda k: state["model"][k].size)
    raw = bytearray((run / ck.LAST).read_bytes())
    at = raw.find(state["model"][big].numpy().tobytes()[:256])
    assert at > 0
    raw[at + 1000] ^= 0x10  # one flipped bit inside the weights: the file still unpickles
    flipped = tmp_path / "flipped.pdckpt"
    flipped.write_bytes(bytes(raw))
    with pytest.raises(ck.CheckpointError, match=r"flipped\.pdckpt: weights do not match their"):
        ck.load_checkpoint(flipped)
    res = CliRunner().invoke(cli.main, ["eval", "--ckpt", str(flipped)])
    assert res.exit_code == 1 and "weights do not match their checksum" in res.output
    del state[ck.MODEL_SHA256]  # as written before checksums: accepted, with a warning
    paddle.save(state, str(tmp_path / "old.pdckpt"))
    assert ck.load_checkpoint(tmp_path / "old.pdckpt")["epoch"] == 1
    assert "no weights checksum (an older checkpoint)" in caplog.text


class _Interrupted(ArrayClips):
    def close(self) -> None:
        pass

    def epoch(self, index: int):
        if index == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return super().epoch(index)


def test_ctrl_c_in_train_says_what_was_saved_and_how_to_resume(
    tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = random_clips(8, len(CLASSES), size=32, seed=0)
    stop = _Interrupted(x, y, CLASSES, batch_size=4)
    with pytest.raises(KeyboardInterrupt, match="no checkpoint saved yet"):
        fit(tiny_cfg(tmp_path / "a", epochs=3, checkpoint_every=5), train_data=stop)
    import train.run

    monkeypatch.setattr(train.run, "open_loaders", lambda cfg: (stop, stop))
    run = tmp_path / "b"
    args = ["train", "--model", "tiny", "--clip-size", "32", "--batch-size", "4", "--epochs", "3",
            "--checkpoint", "1", "--run-dir", str(run)]  # fmt: skip
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == 130, res.output
    assert f"epoch 1 of 3 is the last saved ({run / ck.LAST}); resume with: ucf3d train " \
        f"--run-dir {run.resolve()} --resume" in res.output  # fmt: skip


def _has_libcuda() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.mark.skipif(_has_libcuda(), reason="this machine has NVIDIA's driver")
def test_decode_gpu_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli.main, ["train", "--decode", "gpu", "--run-dir", str(tmp_path / "r")]
    )
    assert res.exit_code == 1
    assert res.output.startswith("Error: --decode gpu needs an NVIDIA GPU and its driver")
    assert not (tmp_path / "r").exists()


def test_clip_dtype_follows_the_precision() -> None:
    from train.run import clip_dtype

    assert clip_dtype("none", "gpu") == clip_dtype("none", "cpu") == "float32"
    assert clip_dtype("fp16", "gpu") == clip_dtype("fp16", "cpu") == "float16"
    assert clip_dtype("bf16", "gpu") == "float16"  # the first conv casts it to bf16 anyway
    assert clip_dtype("bf16", "cpu") == "float32"  # no float16 kernels on the CPU


def test_step_stream_option(tmp_path: Path, data) -> None:
    """--step-stream is validated and kept in the run config; on the CPU every kind just runs."""
    from train.device import compute_stream

    with pytest.raises(ValueError, match="step_stream"):
        TrainConfig(step_stream="low")
    for kind in ("side", "high", "default"):
        with compute_stream("cpu", kind):
            pass
    run = fit(tiny_cfg(tmp_path / "run", epochs=1, step_stream="default"),
              train_data=data[0], val_data=data[1])  # fmt: skip
    assert json.loads((run / "config.json").read_text())["step_stream"] == "default"


def test_fit_warns_when_the_hypervisor_took_the_machines_cpu(tmp_path: Path, data, monkeypatch,
                                                              caplog) -> None:  # fmt: skip
    """An epoch during which the machine's hypervisor took STEAL_WARN_PCT or more of its busy CPU
    time is recorded (train_host_steal_pct) and flagged in the log. The hypervisor cannot be
    summoned in a test: the /proc/stat reading is replaced by one whose steal grows by 20 % of
    its busy time at every reading."""
    import logging

    import train.loop

    readings = iter(range(1, 10_000))

    def busy_steal() -> tuple[float, float]:
        n = next(readings)
        return 100.0 * n, 20.0 * n

    monkeypatch.setattr(train.loop, "cpu_busy_steal", busy_steal)
    with caplog.at_level(logging.WARNING, logger="train.run"):
        run = fit(tiny_cfg(tmp_path / "run", epochs=1), train_data=data[0], val_data=data[1])
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["train_host_steal_pct"] == 20.0
    assert any("hypervisor took 20.0 %" in r.getMessage() for r in caplog.records)
