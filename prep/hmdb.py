"""HMDB-51 split files (testTrainMulti_7030_splits/) -> typed entries with safe, unique keys.

Layout: `<videos>/<class>/<video>.avi`; per class and split `<class>_test_split<N>.txt`, one line
`<video>.avi <flag>` per video: 1 = train, 2 = test, 0 = not used in that split. Labels are the
class names in sorted order (Python's code-point order, as Hara's `hmdb51_json.py` sorts them).
HMDB's file names come from movie and web-clip titles (`#`, `&`, `(`, `[`, `!`, `;`, `'`, `+`,
commas, several dots, some very long), so the key is `video_key(relpath)`: a sanitised, bounded
stem plus a hash of the original `<class>/<video>.avi`, which the record keeps as `source`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path, PurePosixPath

from ondisk import FormatError
from prep.ucf import VideoEntry

log = logging.getLogger(__name__)

SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[0-9]+)\.txt$")
FLAGS = {"0": None, "1": "train", "2": "test"}
STEM_CHARS = 48  # of the sanitised stem: keys stay far below ustar's 100-byte member names
HASH_CHARS = 10  # hex digits of sha256(relpath): 40 bits, unique for any real dataset
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")  # runs of anything else (underscores too) -> one "_"


def video_key(relpath: str) -> str:
    """`brush_hair/Dr._Jekyll_&_Mr._Hyde_..._0.avi` -> `Dr_Jekyll_Mr_Hyde_..._0-<10 hex>`.

    Only `[A-Za-z0-9_-]`: no dot (webdataset splits `<key>.<component>` at the first one), no
    space (DALI's GPU file lists), no shell or glob characters; at most 59 characters.
    """
    stem = PurePosixPath(relpath).stem
    safe = _UNSAFE.sub("_", stem).strip("_-")[:STEM_CHARS].rstrip("_-") or "video"
    digest = hashlib.sha256(relpath.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_CHARS]
    return f"{safe}-{digest}"


def _split_files(splits_dir: Path) -> dict[int, dict[str, Path]]:
    """split -> class -> its split file; every class must have every split."""
    found: dict[int, dict[str, Path]] = {}
    for p in sorted(splits_dir.iterdir()):
        m = SPLIT_FILE.match(p.name)
        if m and p.is_file():
            found.setdefault(int(m["split"]), {})[m["cls"]] = p
    if not found:
        raise FormatError(
            f"{splits_dir}: no <class>_test_split<N>.txt files "
            "(is this testTrainMulti_7030_splits/?)"
        )
    classes = sorted({c for per in found.values() for c in per})
    for k, per in sorted(found.items()):
        missing = [c for c in classes if c not in per]
        if missing:
            raise FormatError(
                f"{splits_dir / f'{missing[0]}_test_split{k}.txt'}: not found, but other classes "
                f"have split {k} ({len(missing)} class(es) lack it)"
            )
    return found


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty stripped lines with 1-based numbers. Bytes that are not UTF-8 (a name in another
    encoding) are kept as surrogate escapes, so the name still opens the file it names."""
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_split_file(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, video file name, "train" / "test" / None) for every line of one file."""
    rows = []
    for n, line in _lines(path):
        parts = line.rsplit(None, 1)  # a name may hold spaces; the flag is the last field
        if len(parts) != 2 or parts[1] not in FLAGS:
            raise FormatError(f"{path}:{n}: expected '<video>.avi <0|1|2>', got {line!r}")
        if "/" in parts[0] or "\\" in parts[0]:
            raise FormatError(f"{path}:{n}: expected a file name inside the class folder")
        rows.append((n, parts[0], FLAGS[parts[1]]))
    if not rows:
        log.warning("%s: lists no videos (an empty file)", path)
    return rows


def read_splits(splits_dir: Path) -> tuple[list[str], list[VideoEntry]]:
    """Sorted class names and every video some split trains or tests on, sorted by key.

    Videos flagged 0 in every split are left out (no split reads them), counted in the log.
    """
    splits_dir = Path(splits_dir)
    if not splits_dir.is_dir():
        raise FormatError(f"{splits_dir}: split folder not found")
    files = _split_files(splits_dir)
    classes = sorted({c for per in files.values() for c in per})
    labels = {c: i for i, c in enumerate(classes)}
    roles: dict[str, dict[str, list[int]]] = {}
    for k, per in sorted(files.items()):
        for cls, path in sorted(per.items()):
            seen: dict[str, int] = {}
            for n, name, role in _read_split_file(path):
                if name in seen:
                    raise FormatError(f"{path}:{n}: {name} is already listed at line {seen[name]}")
                seen[name] = n
                r = roles.setdefault(f"{cls}/{name}", {"train": [], "test": []})
                if role is not None:
                    r[role].append(k)
    entries, by_key, unused = [], {}, 0
    for rel, r in sorted(roles.items()):
        if not r["train"] and not r["test"]:
            unused += 1
            continue
        key = video_key(rel)
        if key in by_key:  # 40 bits of hash: not expected, but never silently merged
            raise FormatError(f"{splits_dir}: {rel} and {by_key[key]} get the same key {key}")
        by_key[key] = rel
        cls = rel.split("/", 1)[0]
        entries.append(VideoEntry(key, cls, labels[cls], rel, tuple(r["train"]), tuple(r["test"])))
    if unused:
        log.info("%s: %d video(s) flagged 0 in every split: not used, not extracted",
                 splits_dir, unused)  # fmt: skip
    entries.sort(key=lambda e: e.key)
    return classes, entries
