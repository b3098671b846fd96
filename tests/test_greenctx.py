"""SMs left to the loader (loader.greenctx): choice, checks, CPU no-op; GPU: a real partition."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.feed import FeedConfig
from bench.sweep import split_env
from loader import LoaderConfig
from loader.greenctx import GreenContextError, SmPartition, default_loader_sms, unavailable

needs_gpu = pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def test_default_loader_sms_only_for_nvdec_on_the_gpu() -> None:
    assert default_loader_sms("gpu", "gpu") == default_loader_sms("gpu", "hybrid") == 2
    assert default_loader_sms("gpu", "cpu") == 0  # CPU decoding puts no kernels on the SMs
    assert default_loader_sms("cpu", "gpu") == default_loader_sms("cpu", "cpu") == 0
    assert default_loader_sms("gpu", "gpu", stream="default") == 0  # no partition stream there
    assert default_loader_sms("gpu", "gpu", stream="high") == 2  # a side stream, high priority


def test_train_config_resolves_and_checks_loader_sms() -> None:
    # imported here: train.config needs Paddle, which the GPU machine's Python has not, and this
    # file's GPU test must still be collected there
    TrainConfig = pytest.importorskip("train.config").TrainConfig  # noqa: N806
    assert TrainConfig(device="gpu", decode="gpu").steps_loader_sms() == 2
    assert TrainConfig(device="gpu", decode="cpu").steps_loader_sms() == 0
    assert TrainConfig(device="gpu", decode="gpu", step_stream="default").steps_loader_sms() == 0
    assert TrainConfig(device="gpu", decode="gpu", step_stream="high").steps_loader_sms() == 2
    assert TrainConfig(device="gpu", decode="gpu", loader_sms=0).steps_loader_sms() == 0
    assert TrainConfig(device="gpu", decode="cpu", loader_sms=8).steps_loader_sms() == 8
    assert TrainConfig(device="cpu").steps_loader_sms() == 0
    for bad in ({"loader_sms": -1}, {"loader_sms": 2}, {"device": "gpu", "loader_sms": 2,
                                                         "step_stream": "default"}):  # fmt: skip
        with pytest.raises(ValueError, match="loader_sms"):
            TrainConfig(**bad)
    cfg = TrainConfig(device="gpu", decode="gpu", loader_sms=4)
    assert TrainConfig.from_dict(cfg.to_dict()).loader_sms == 4  # kept in config.json


def test_feed_config_resolves_like_train(tmp_path: Path) -> None:
    lc = LoaderConfig(manifests=tmp_path, split=1, decode="gpu")
    assert FeedConfig(lc).steps_loader_sms() == 2
    assert FeedConfig(lc, stream="default").steps_loader_sms() == 0
    assert FeedConfig(lc, stream="high", loader_sms=4).steps_loader_sms() == 4
    assert FeedConfig(lc, device="cpu").steps_loader_sms() == 0
    assert FeedConfig(lc, loader_sms=0).steps_loader_sms() == 0
    for bad in ({"device": "cpu", "loader_sms": 2}, {"stream": "default", "loader_sms": 2},
                {"loader_sms": -1}):  # fmt: skip
        with pytest.raises(ValueError, match="loader_sms"):
            FeedConfig(lc, **bad)


def test_compute_stream_on_the_cpu_is_a_no_op() -> None:
    from train.device import compute_stream

    with compute_stream("cpu", "side", 0):
        pass


def test_sweep_env_words() -> None:
    env, args = split_env(["CUDA_DEVICE_MAX_CONNECTIONS=32", "A=b=c", "feed", "--x=1"])
    assert env == {"CUDA_DEVICE_MAX_CONNECTIONS": "32", "A": "b=c"} and args == ["feed", "--x=1"]
    assert split_env(["feed", "K=V"]) == ({}, ["feed", "K=V"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        split_env(["1X=2", "feed"])


@pytest.mark.skipif(_has_driver(), reason="this machine has a CUDA driver")
def test_partition_without_a_driver_is_a_clear_error() -> None:
    assert "no CUDA driver" in (unavailable() or "")
    with pytest.raises(GreenContextError, match="no CUDA driver"):
        SmPartition(0, 2)


@pytest.mark.gpu
@needs_gpu
def test_partition_on_a_gpu() -> None:
    """A real green context: fewer SMs than the device, a stream, a stream on the SMs it leaves,
    an impossible size refused."""
    if unavailable():
        pytest.skip(f"no green contexts here: {unavailable()}")
    with pytest.raises(ValueError, match=">= 1"):
        SmPartition(0, 0)
    with SmPartition(0, 2, fine=True) as fine, SmPartition(0, 2) as aligned:
        assert 0 < aligned.sms <= fine.sms <= fine.device_sms - 2
        assert fine.stream() != 0 and fine.stream(priority=-1) != 0
        assert fine.rest_stream() != 0 and aligned.rest_stream(priority=-1) != 0
        with fine.current(), fine.current(rest=True):
            pass
    with pytest.raises(GreenContextError, match="cannot leave"):
        SmPartition(0, 10_000)


def test_partition_hint_names_the_way_out() -> None:
    from train.device import partition_hint

    err = OSError("(External) CUDNN error(8), CUDNN_STATUS_EXECUTION_FAILED.\n  [Hint: ...]")
    hint = partition_hint(err, 2)
    assert hint and "CUDNN_STATUS_EXECUTION_FAILED" in hint and "--loader-sms 0" in hint
    assert partition_hint(err, 0) is None  # no partition: the error as it is
    assert partition_hint(ValueError("loss is nan"), 2) is None  # unrelated errors untouched


def test_one_driver_handle_for_every_user() -> None:
    """loader.cudadrv opens libcuda once; without a driver each user says so its own way."""
    from loader.cudadrv import device, libcuda
    from loader.cudasync import set_schedule

    assert libcuda() is libcuda()
    if libcuda() is None:  # this machine: no NVIDIA driver
        assert device(0) is None
        assert set_schedule("blocking") == "unavailable"
        assert unavailable() == "no CUDA driver (libcuda.so.1 cannot be loaded)"
    else:  # a GPU machine: its first GPU is there
        assert device(0) is not None


def test_work_queues_are_widened_unless_the_user_chose(monkeypatch, caplog) -> None:  # noqa: ANN001
    """loader.workqueues: 32 hardware queues where nothing is set; a value set is kept as it is;
    set after the device's context exists, it says it came too late."""
    from loader import workqueues

    monkeypatch.delenv(workqueues.ENV, raising=False)
    assert workqueues.widen() in ("32", "32 (context already created)")
    assert os.environ[workqueues.ENV] == "32"
    monkeypatch.setenv(workqueues.ENV, "8")  # the user's choice (e.g. the rounds before the 8th)
    assert workqueues.widen() == "8" and os.environ[workqueues.ENV] == "8"
    monkeypatch.delenv(workqueues.ENV)
    monkeypatch.setattr(workqueues, "_primary_active", lambda device_id: True)
    with caplog.at_level(logging.WARNING, logger="loader.workqueues"):
        assert workqueues.widen(3) == "32 (context already created)"
    assert "after the CUDA context of device 3 was created" in caplog.text


@pytest.mark.parametrize("command", ["train", "eval"])
def test_gpu_commands_widen_the_work_queues_before_paddle(command: str, tmp_path: Path) -> None:
    """`ucf3d train|eval --device gpu` set CUDA_DEVICE_MAX_CONNECTIONS before Paddle is imported
    (so before it can create a context); on a CPU-only Paddle build they then fail clearly, as
    before. In a fresh interpreter: this one imported Paddle long ago."""
    where = ["--run-dir", str(tmp_path)] if command == "train" else ["--ckpt", str(tmp_path / "x")]
    args = [command, "--device", "gpu", *where]
    code = (
        "import os, sys\n"
        "import loader.workqueues as wq\n"
        "real = wq.widen\n"
        "def spy(device_id=0):\n"
        "    print('widen: paddle imported', 'paddle' in sys.modules, flush=True)\n"
        "    return real(device_id)\n"
        "wq.widen = spy\n"
        "from cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, os.environ.get(wq.ENV), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_DEVICE_MAX_CONNECTIONS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parent.parent, timeout=300)  # fmt: skip
    assert "widen: paddle imported False" in out.stdout, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("exit ") and last.endswith(" 32") and last != "exit 0 32", out.stdout
    assert "Error: " in out.stderr + out.stdout  # one clear line, as on any CPU-only build
