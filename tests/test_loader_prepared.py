"""The loader on prep's output (conftest `prepared`): CPU always; GPU vs CPU on a GPU machine."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from loader import ClipLoader, LoaderConfig

needs_gpu = pytest.mark.skipif(
    shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU with NVDEC"
)


def test_train_and_eval_on_prepared_shards(prepared) -> None:
    for subset, mode in (("train", "train"), ("test", "video")):
        cfg = LoaderConfig(
            manifests=prepared.manifests,
            shards=prepared.shards,
            split=1,
            subset=subset,
            mode=mode,
            batch_size=16,
            num_threads=2,
        )
        with ClipLoader(cfg) as loader:
            keys = []
            for b in loader.epoch(0):
                assert list(b.clips.shape[1:]) == [3, 16, 112, 112]
                cls = [loader.classes[i] for i in b.labels.numpy()]
                # UCF keys are v_<Class>_gNN_cNN (case may differ: the v_Pushleft quirk)
                assert all(
                    k.split("_")[1].lower() == c.lower() for k, c in zip(b.keys, cls, strict=True)
                )
                assert np.isfinite(b.clips.numpy()).all()
                keys += b.keys
            assert sorted(set(keys)) == sorted(r.key for r in loader.dataset.records)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("mode", ["train", "clip"])
def test_gpu_matches_cpu(prepared, mode: str) -> None:
    """The same plan decoded by NVDEC and by libavcodec gives the same clips within tolerance."""
    clips = {}
    for decode in ("cpu", "gpu"):
        cfg = LoaderConfig(
            manifests=prepared.manifests,
            shards=prepared.shards,
            split=1,
            subset="train" if mode == "train" else "test",
            mode=mode,
            batch_size=8,
            num_threads=2,
            decode=decode,
            seed=3,
        )
        with ClipLoader(cfg) as loader:
            clips[decode] = [(b.keys, b.clips.numpy()) for b in loader.epoch(1)]
    for (keys_c, c), (keys_g, g) in zip(clips["cpu"], clips["gpu"], strict=True):
        assert keys_c == keys_g
        assert np.abs(c - g).mean() < 2.0  # pixel units (std 1): codec + resampler tolerance


@pytest.mark.gpu
@needs_gpu
def test_gpu_segments_keep_plan_order_across_boundaries(prepared, tmp_path) -> None:
    """Epochs run through several NVDEC segments: every batch is the planned one, the segments
    after the first were built in the background, and those done with were shut down off the
    consumer's thread (loader.gpu)."""
    cfg = LoaderConfig(manifests=prepared.manifests, shards=prepared.shards, batch_size=8,
                       num_threads=2, decode="gpu", output="uint8", seed=3, gpu_batch=4,
                       gpu_pipelines=2, gpu_segment_clips=1,
                       cache_dir=tmp_path / "cache")  # fmt: skip
    with ClipLoader(cfg) as loader:  # one epoch per segment
        backend = loader.backend
        for epoch in range(4):
            got = [batch.keys for _, batch in loader.raw_epoch(epoch)]
            assert got == [b.keys for b in loader.batches(epoch)]
    report = backend.segment_report()  # after close: every shut-down done
    assert [s["epochs"] for s in report["segments"]][:4] == [[0, 0], [1, 1], [2, 2], [3, 3]]
    assert [s["background"] for s in report["segments"]][:4] == [False, True, True, True]
    assert report["retire_s"] > 0 and report["switch_s"] >= 0


def test_seeking_without_index_is_frame_exact(prepared) -> None:
    """The CPU backend decodes with build_index=False; indexed seeking must give the same clips."""
    from nvidia.dali import fn, pipeline_def, types

    from loader.augment import augment, param_feed
    from loader.source import ShardReader

    cfg = LoaderConfig(
        manifests=prepared.manifests,
        shards=prepared.shards,
        split=1,
        subset="train",
        mode="train",
        batch_size=16,
        num_threads=2,
        seed=5,
    )
    with ClipLoader(cfg) as loader:
        batch = loader.batches(0)[0]
        ours = next(iter(loader.epoch(0))).clips.numpy()
        reader = ShardReader(loader.dataset)
        data = [reader.read(int(i)) for i in batch.requests["index"]]
    frames = list(batch.requests["frames"].astype(np.int32))
    params = param_feed(batch.requests)

    @pipeline_def(batch_size=len(data), num_threads=2, device_id=None)
    def indexed():
        enc, fr, rs, re = fn.external_source(
            source=lambda: (data, frames, *params),
            num_outputs=4,
            batch=True,
            dtype=[types.UINT8, types.INT32, types.FLOAT, types.FLOAT],
        )
        return augment(
            fn.decoders.video(enc, device="cpu", frames=fr, build_index=True), (rs, re), cfg
        )

    pipe = indexed()
    pipe.build()
    (ref,) = pipe.run()
    assert np.array_equal(ours, np.array(ref.as_tensor()))
    assert (batch.requests["start"] % 16 != 0).any()  # some windows start between keyframes
