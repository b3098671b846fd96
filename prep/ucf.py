"""UCF-101 split lists (ucfTrainTestlist/) -> typed entries; labels from folders + classInd.txt."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ondisk import FormatError

log = logging.getLogger(__name__)

CLASS_INDEX = "classInd.txt"
SPLITS = (1, 2, 3)


@dataclass(frozen=True)
class VideoEntry:
    """One video named in the official lists."""

    key: str  # file name without extension: v_ApplyEyeMakeup_g08_c01
    cls: str  # the class folder (not the name inside the file name: UCF's HandstandPushups quirk)
    label: int  # 0-based
    relpath: str  # "Class/v_..._gGG_cCC.avi", relative to the videos directory
    train_in: tuple[int, ...]  # splits that train on it
    test_in: tuple[int, ...]  # splits that test on it


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty stripped lines with 1-based numbers; UCF's lists use CRLF line ends."""
    if not path.is_file():
        raise FormatError(f"{path}: split list not found")
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_class_index(path: Path) -> list[str]:
    """classInd.txt ("1 ApplyEyeMakeup" ...) -> class names in label order."""
    names: list[str] = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise FormatError(f"{path}:{n}: expected '<number> <ClassName>', got {line!r}")
        if int(parts[0]) != len(names) + 1:
            raise FormatError(f"{path}:{n}: expected class number {len(names) + 1}, got {parts[0]}")
        if parts[1] in names:
            raise FormatError(f"{path}:{n}: duplicate class {parts[1]}")
        names.append(parts[1])
    if not names:
        raise FormatError(f"{path}: no classes")
    return names


def _read_list(path: Path, labels: dict[str, int], with_label: bool) -> list[tuple[int, str]]:
    """(line number, "Class/video.avi") for every video the list names."""
    rels = []
    for n, line in _lines(path):
        parts = line.split()
        rel = PurePosixPath(parts[0].replace("\\", "/"))
        if len(parts) > 2 or len(rel.parts) != 2:
            raise FormatError(f"{path}:{n}: expected 'Class/video.avi{' label' * with_label}'")
        cls = rel.parts[0]
        if cls not in labels:
            raise FormatError(f"{path}:{n}: class folder {cls!r} is not in {CLASS_INDEX}")
        if len(parts) == 2 and parts[1] != str(labels[cls] + 1):
            raise FormatError(
                f"{path}:{n}: label {parts[1]} but {CLASS_INDEX} numbers {cls} {labels[cls] + 1}"
            )
        rels.append((n, str(rel)))
    if not rels:
        log.warning("%s: lists no videos (an empty file)", path)
    return rels


def read_splits(splits_dir: Path) -> tuple[list[str], list[VideoEntry]]:
    """Class names and every video named in train/testlist0{1,2,3}.txt, sorted by key."""
    splits_dir = Path(splits_dir)
    if not (splits_dir / CLASS_INDEX).is_file() and any(splits_dir.glob("*_test_split*.txt")):
        raise FormatError(f"{splits_dir}: holds HMDB-51's <class>_test_split<N>.txt lists, not "
                          "ucfTrainTestlist/ (extract --dataset hmdb51 reads them)")  # fmt: skip
    classes = read_class_index(splits_dir / CLASS_INDEX)
    labels = {c: i for i, c in enumerate(classes)}
    roles: dict[str, dict[str, list[int]]] = {}
    found = [k for k in SPLITS if (splits_dir / f"trainlist0{k}.txt").is_file()]
    if not found:
        raise FormatError(f"{splits_dir}: no trainlist0{{1,2,3}}.txt (is this ucfTrainTestlist/?)")
    for k in SPLITS:
        if k not in found and (splits_dir / f"testlist0{k}.txt").is_file():
            raise FormatError(f"{splits_dir / f'trainlist0{k}.txt'}: not found, but testlist0{k}"
                              f".txt is: split {k} is incomplete")  # fmt: skip
    if len(found) < len(SPLITS):
        absent = "/".join(str(k) for k in SPLITS if k not in found)
        log.warning("%s: only split(s) %s listed (no trainlist0%s.txt)", splits_dir,
                    ", ".join(map(str, found)), absent)  # fmt: skip
    for k in found:
        seen: dict[str, str] = {}  # "Class/video.avi" -> "file:line" where split k lists it
        for role, name in (("train", f"trainlist0{k}.txt"), ("test", f"testlist0{k}.txt")):
            for n, rel in _read_list(splits_dir / name, labels, with_label=role == "train"):
                r = roles.setdefault(rel, {"train": [], "test": []})
                if rel in seen:
                    raise FormatError(f"{splits_dir / name}:{n}: {rel} is already listed in split "
                                      f"{k}, at {seen[rel]}")  # fmt: skip
                seen[rel] = f"{name}:{n}"
                r[role].append(k)
    entries, by_key = [], {}
    for rel, r in roles.items():
        p = PurePosixPath(rel)
        if "." in p.stem:  # webdataset splits "<key>.<component>" at the first dot
            raise FormatError(f"{splits_dir}: video id {p.stem!r} must not contain a dot")
        if p.stem in by_key:
            raise FormatError(f"{splits_dir}: video id {p.stem} names {by_key[p.stem]} and {rel}")
        by_key[p.stem] = rel
        cls = p.parts[0]
        entries.append(
            VideoEntry(p.stem, cls, labels[cls], rel, tuple(r["train"]), tuple(r["test"]))
        )
    entries.sort(key=lambda e: e.key)
    return classes, entries
