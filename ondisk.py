"""The on-disk contract between prep (writer) and loader (reader): files, components, version.

README.md, section "On-disk format", describes the same thing for people; keep the two in step and
bump FORMAT_VERSION on any incompatible change.
"""

from __future__ import annotations

import json
import struct
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

FORMAT_NAME = "ucf3d-shards"
FORMAT_VERSION = 1
CLIP_LEN = 16  # frames per clip everywhere in Hara et al.

# --- extract work directory (WORK/) -----------------------------------------------------------
WORK_VIDEOS = "videos"  # WORK/videos/<Class>/<key>.<ext>
WORK_INDEX = "index.jsonl"  # one VideoRecord per prepared video, sorted by key
WORK_ERRORS = "errors.jsonl"  # one {"key", "path", "reason"} per video that could not be prepared
WORK_CONFIG = "extract_config.json"
WORK_CLASSES = "classInd.txt"  # "<1-based number> <class>" per line, in label order
VIDEO_EXT = {"vp9": "webm", "h264": "mp4"}  # codec -> container extension (also the tar component)


@dataclass(frozen=True)
class VideoRecord:
    """One prepared video in WORK/index.jsonl, and the shard's `json` component."""

    key: str  # video id: UCF-101's file name without extension; HMDB-51's prep.hmdb.video_key
    cls: str  # class (folder) name; JSON field "class"
    label: int  # 0-based: classInd.txt's number minus one
    n_frames: int  # exact frame count, counted by decoding the training-format video
    width: int
    height: int
    fps: int
    codec: str  # "vp9" or "h264"
    gop: int  # a keyframe every `gop` frames, closed GOPs, no reordering
    bytes: int  # size of the training-format video
    sha256: str  # of the training-format video
    src_bytes: int
    src_sha256: str
    path: str  # of the training-format video, relative to WORK
    train_in: tuple[int, ...] = ()  # official splits that train on this video
    test_in: tuple[int, ...] = ()  # official splits that test on it
    source: str = ""  # the original file, relative to the videos folder (optional: older lack it)

    def to_obj(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("cls")
        d["train_in"], d["test_in"] = list(self.train_in), list(self.test_in)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_obj(), sort_keys=True)

    @classmethod
    def from_obj(cls, obj: object, where: str) -> VideoRecord:
        if not isinstance(obj, dict):
            raise FormatError(f"{where}: expected a JSON object")
        obj = dict(obj)
        if "class" in obj:
            obj["cls"] = obj.pop("class")
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = sorted(set(required) - set(obj))
        if missing:
            raise FormatError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            obj["train_in"] = tuple(obj.get("train_in", ()))
            obj["test_in"] = tuple(obj.get("test_in", ()))
            return cls(**{k: obj[k] for k in names if k in obj})
        except TypeError as e:
            raise FormatError(f"{where}: {e}") from e


def shard_index_name(shard: str) -> str:
    """DALI index file beside a shard: `fam-t1-00000.tar` -> `fam-t1-00000.idx` (wds2idx's name)."""
    return shard[: -len(".tar")] + ".idx" if shard.endswith(".tar") else shard + ".idx"


def resolve_shards_dir(summary_path: Path, summary: dict) -> Path:
    """The summary's "shards_dir" is relative to the summary's own directory (or absolute)."""
    return (Path(summary_path).parent / summary["shards_dir"]).resolve()


# --- shard samples: <key>.<component> members of a webdataset tar --------------------------
COMP_CLS = "cls"  # ASCII decimal 0-based label (webdataset's convention, decoded to int)
COMP_JSON = "json"  # UTF-8 JSON object with the VideoRecord fields
COMP_META = "meta.i32"  # little-endian int32[4]: label, n_frames, height, width (DALI dtypes=INT32)
META_FIELDS = ("label", "n_frames", "height", "width")
_META = struct.Struct("<4i")


def pack_meta(label: int, n_frames: int, height: int, width: int) -> bytes:
    """The fixed-size binary component DALI's readers.webdataset reads as INT32."""
    return _META.pack(label, n_frames, height, width)


def unpack_meta(raw: bytes) -> dict[str, int]:
    if len(raw) != _META.size:
        raise ValueError(f"{COMP_META} must be {_META.size} bytes, got {len(raw)}")
    return dict(zip(META_FIELDS, _META.unpack(raw), strict=True))


# --- manifests (manifests/) ------------------------------------------------------------------
SUBSETS = ("train", "test")


def manifest_name(split: int, subset: str) -> str:
    return f"split{split}_{subset}.jsonl"


def summary_name(split: int) -> str:
    return f"split{split}_summary.json"


class FormatError(ValueError):
    """A manifest, summary or shard breaks this format; the message names the file and place."""


@dataclass(frozen=True)
class ManifestRecord:
    """One video of a split subset: where its bytes are and what they should hash to."""

    key: str  # video id, e.g. v_ApplyEyeMakeup_g08_c01 (the webdataset __key__)
    label: int  # 0-based class index (classInd.txt's number minus one)
    cls: str  # class name, the folder name in UCF-101 (JSON field "class")
    n_frames: int  # exact decoded frame count of the training-format video
    shard: str  # shard file name, relative to the shards directory
    offset: int  # byte offset of the video member's data inside the tar
    size: int  # byte size of the video member's data
    ext: str  # video component: "webm" (VP9) or "mp4" (H.264)
    sha256: str  # of the video bytes
    source: str = ""  # the original file, "<class>/<name>.avi" (absent from older manifests)

    def to_json(self) -> str:
        d = asdict(self)
        d["class"] = d.pop("cls")
        return json.dumps(d, sort_keys=True)


_RECORD_FIELDS = {f.name: f.type for f in fields(ManifestRecord)}
_OPTIONAL_FIELDS = {f.name for f in fields(ManifestRecord) if f.default is not MISSING}


def _record_from_obj(obj: object, where: str) -> ManifestRecord:
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: expected a JSON object")
    obj = dict(obj)
    if "class" in obj:
        obj["cls"] = obj.pop("class")
    missing = sorted(set(_RECORD_FIELDS) - _OPTIONAL_FIELDS - set(obj))
    if missing:
        raise FormatError(f"{where}: missing field(s) {', '.join(missing)}")
    if not isinstance(obj.get("source", ""), str):
        raise FormatError(f"{where}: field 'source' must be a string")
    for name in ("label", "n_frames", "offset", "size"):
        if not isinstance(obj[name], int) or isinstance(obj[name], bool) or obj[name] < 0:
            raise FormatError(f"{where}: field {name!r} must be a non-negative integer")
    for name in ("key", "cls", "shard", "ext", "sha256"):
        if not isinstance(obj[name], str) or not obj[name]:
            raise FormatError(f"{where}: field {name!r} must be a non-empty string")
    return ManifestRecord(**{k: obj[k] for k in _RECORD_FIELDS if k in obj})


def read_manifest(path: Path) -> list[ManifestRecord]:
    """Load and validate a split manifest; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: manifest not found (run `ucf3d shard` first)")
    records = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(f"{where}: not valid JSON ({e.msg})") from e
            rec = _record_from_obj(obj, where)
            if rec.key in seen:
                raise FormatError(f"{where}: duplicate key {rec.key}")
            seen.add(rec.key)
            records.append(rec)
    if not records:
        raise FormatError(f"{path}: manifest is empty")
    return records


def write_manifest(path: Path, records: list[ManifestRecord]) -> None:
    """Write a manifest atomically (tmp + rename) in the given order."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)


def read_summary(path: Path) -> dict:
    """Load a split summary and check its format name and version."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: split summary not found (run `ucf3d shard` first)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not valid JSON ({e.msg})") from e
    if summary.get("format") != FORMAT_NAME:
        raise FormatError(f"{path}: not a {FORMAT_NAME} summary (format={summary.get('format')!r})")
    if summary.get("version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: format version {summary.get('version')} but this code reads version "
            f"{FORMAT_VERSION}; re-run `ucf3d shard`"
        )
    for name in ("split", "classes", "shards_dir", "subsets"):
        if name not in summary:
            raise FormatError(f"{path}: missing field {name!r}")
    return summary
