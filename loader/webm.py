"""Trim a WebM (VP9) to the GOPs one clip needs, so DALI's CPU decoder does not decode from frame 0.

Measured (docs/BENCHMARKS.md): `fn.decoders.video(device="cpu")` on an in-memory stream costs time
proportional to the START frame — even on keyframes, with or without `build_index` — i.e. it decodes
from the beginning. A WebM written by ffmpeg starts a Cluster at every keyframe (prep's closed
GOPs), so a valid stream for frames [first, last] is: the file's header elements (EBML header,
Segment with unknown size, Info, Tracks, ...; the SeekHead blanked to a Void element because its
offsets no longer hold) followed by the Clusters from the last keyframe at or before `first`
through the one holding `last`. DALI numbers the frames of that stream from 0, so the request's
frame indices shift by the first kept frame. Anything unexpected -> None, and the caller feeds
the whole video (correct, just slower).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EBML, SEGMENT, SEEKHEAD, CLUSTER = 0x1A45DFA3, 0x18538067, 0x114D9B74, 0x1F43B675
VOID, SIMPLEBLOCK, BLOCKGROUP = 0xEC, 0xA3, 0xA0


def _vint(b: bytes, i: int, keep_marker: bool = False) -> tuple[int, int]:
    """EBML variable-length integer at b[i]: (value, length in bytes)."""
    first = b[i]
    n, mask = 1, 0x80
    while n <= 8 and not first & mask:
        mask >>= 1
        n += 1
    if n > 8:
        raise ValueError("bad EBML vint")
    value = first if keep_marker else first & (mask - 1)
    for k in range(1, n):
        value = (value << 8) | b[i + k]
    return value, n


def _element(b: bytes, i: int) -> tuple[int, int, int, bool]:
    """(id, data start, data end, size unknown) of the element at b[i]."""
    eid, n1 = _vint(b, i, keep_marker=True)
    size, n2 = _vint(b, i + n1)
    start = i + n1 + n2
    unknown = size == (1 << (7 * n2)) - 1
    return eid, start, (len(b) if unknown else start + size), unknown


@dataclass(frozen=True)
class ClusterIndex:
    """Where a WebM's clusters are and which frames each holds."""

    header: bytes  # patched bytes up to the first cluster
    offsets: np.ndarray  # (C, 2) byte range of each cluster
    first_frame: np.ndarray  # (C,) index of each cluster's first frame
    keyframe: np.ndarray  # (C,) whether the cluster starts with a keyframe
    n_frames: int


def index_webm(data: bytes) -> ClusterIndex | None:
    """Parse the top-level structure; None if this is not a plain one-track WebM we can trim."""
    try:
        return _index(data)
    except (ValueError, IndexError):
        return None


def _index(b: bytes) -> ClusterIndex | None:
    eid, _, end, _ = _element(b, 0)
    if eid != EBML:
        return None
    eid, seg_start, seg_end, _ = _element(b, end)
    if eid != SEGMENT:
        return None
    header = bytearray(b)
    seg_size_len = seg_start - end - 4  # the Segment ID is 4 bytes
    header[end + 4 : seg_start] = bytes(
        [(2 << (8 - seg_size_len)) - 1] + [0xFF] * (seg_size_len - 1)
    )
    ranges, firsts, keys = [], [], []
    frame, i, header_end = 0, seg_start, None
    while i < min(seg_end, len(b)):
        eid, start, stop, unknown = _element(b, i)
        if eid == SEEKHEAD:  # offsets into the full file: blank it (same length, Void)
            if start - i - 1 > 8:
                return None
            header[i:start] = _void_header(start - i, stop - start)
        elif eid == CLUSTER:
            if unknown:
                return None
            header_end = i if header_end is None else header_end
            n, key = _count_blocks(b, start, stop)
            ranges.append((i, stop))
            firsts.append(frame)
            keys.append(key)
            frame += n
        i = stop
    if header_end is None or not ranges:
        return None
    return ClusterIndex(
        bytes(header[:header_end]),
        np.array(ranges, np.int64),
        np.array(firsts, np.int64),
        np.array(keys, bool),
        frame,
    )


def _void_header(head_len: int, body_len: int) -> bytes:
    """A Void element header of exactly head_len bytes announcing body_len bytes of payload."""
    size_len = head_len - 1
    return bytes([VOID]) + (body_len | (1 << (7 * size_len))).to_bytes(size_len, "big")


def _count_blocks(b: bytes, start: int, stop: int) -> tuple[int, bool]:
    """(frames in the cluster, whether its first block is a keyframe)."""
    n, key, i = 0, False, start
    while i < stop:
        eid, s, e, _ = _element(b, i)
        if eid == SIMPLEBLOCK:
            if n == 0:
                _, tlen = _vint(b, s)  # track number, then int16 timecode, then flags
                key = bool(b[s + tlen + 2] & 0x80)
            n += 1
        elif eid == BLOCKGROUP:
            n += 1  # key-ness of a BlockGroup needs its ReferenceBlock: treat as non-key
        i = e
    return n, key


def trim(
    data: np.ndarray, idx: ClusterIndex, first: int, last: int
) -> tuple[np.ndarray, int] | None:
    """(a stream holding frames first..last, index of its frame 0), or None if not possible."""
    if not 0 <= first <= last < idx.n_frames:
        return None
    c0 = int(np.searchsorted(idx.first_frame, first, side="right")) - 1
    while c0 >= 0 and not idx.keyframe[c0]:
        c0 -= 1
    if c0 < 0:
        return None
    c1 = int(np.searchsorted(idx.first_frame, last, side="right")) - 1
    body = data[idx.offsets[c0, 0] : idx.offsets[c1, 1]]
    out = np.empty(len(idx.header) + len(body), np.uint8)
    out[: len(idx.header)] = np.frombuffer(idx.header, np.uint8)
    out[len(idx.header) :] = body
    return out, int(idx.first_frame[c0])
