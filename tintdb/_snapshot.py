"""The snapshot file format of a vector index: hnswlib's graph without its vectors.

A snapshot is a directory ``v<lsn>/`` holding ``graph.npz`` (hnswlib's index file cut
into arrays, the float32 vectors of live records left out: SQLite holds them),
``labels.npy`` (the live labels) and a manifest with CRC32 checksums. This module reads
and writes hnswlib's own file layout (``HEADER``): cutting the vectors out of a saved
index (``state_from_file``), and putting SQLite's vectors back into a scratch file that
hnswlib loads (``load_graph``). ``VectorIndex.save`` and ``VectorIndex.load`` use it.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import shutil
import struct
import sys
import threading
import uuid
import zipfile
import zlib
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Literal, cast

import hnswlib
import numpy as np
import orjson

from ._exact import plain_empty, unit

__all__ = [
    "GENERATION_SHIFT",
    "HEADER",
    "HEADER_NAMES",
    "GRAPH_FILE",
    "LABELS_FILE",
    "Loader",
    "hnsw_space",
    "load_graph",
    "state_from_file",
    "write_graph",
]

log = logging.getLogger("tintdb._index")

HnswSpace = Literal["l2", "ip", "cosine"]


def hnsw_space(space: str) -> HnswSpace:
    """The space as hnswlib's type names it (tintdb checks spaces before any index exists)."""
    if space not in ("l2", "ip", "cosine"):
        raise ValueError(f"hnswlib has no space {space!r}")
    return cast(HnswSpace, space)


# Yields (seqs, vectors) chunks of every record of the collection, in seq order.
Loader = Callable[[], Generator[tuple[np.ndarray, np.ndarray], None, None]]

SNAPSHOT_PREFIX = "v"
GRAPH_FILE = "graph.npz"
LABELS_FILE = "labels.npy"
# Older snapshots are rebuilt: 1 was hnswlib's own file, vectors included; 3 kept the
# upper links as pickled-state arrays, where 4 keeps them as hnswlib's file does; 5 may
# hold labels with a generation (see GENERATION_SHIFT), which 4 never has.
SNAPSHOT_FORMAT = 5
READABLE_FORMATS = (4, 5)
# A record whose vector changes gets a new node under a new label, its seq plus the next
# generation above this many bits, and its old node is marked deleted: inserting a node
# costs a third to a tenth of hnswlib's in-place update, which also re-selects the links
# of every neighbour (docs/benchmarks.md), and a fresh
# node is reached like any other, where a moved one could be left with no way in.
GENERATION_SHIFT = 40
SEQ_MASK = (1 << GENERATION_SHIFT) - 1
LOAD_PREFIX = ".load-"  # scratch files of loads in progress, named by pid


def crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_format(snap: Path) -> int | None:
    try:
        return int(orjson.loads((snap / "manifest.json").read_bytes()).get("format", 1))
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def remove_abandoned(directory: Path) -> None:
    """Delete temporary snapshot directories and load scratch files left by a process
    that died writing them."""
    for tmp in [*directory.glob(".tmp-*"), *directory.glob(f"{LOAD_PREFIX}*")]:
        try:
            os.kill(int(tmp.name.split("-")[1]), 0)
        except ProcessLookupError:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError):
            continue


# hnswlib's index file (hnswalg.h, saveIndex) starts with 96 bytes: offsetLevel0,
# max_elements, cur_element_count, size_data_per_element, label_offset, offsetData (six
# size_t), maxlevel (int), enterpoint (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t). One record per element follows (links, vector, label), then
# each element's upper-level links, prefixed by their byte length (uint32).
HEADER = np.dtype(
    [
        ("offset_level0", "<u8"),
        ("max_elements", "<u8"),
        ("cur_element_count", "<u8"),
        ("size_data_per_element", "<u8"),
        ("label_offset", "<u8"),
        ("offset_data", "<u8"),
        ("max_level", "<i4"),
        ("enterpoint_node", "<u4"),
        ("max_M", "<u8"),
        ("max_M0", "<u8"),
        ("M", "<u8"),
        ("mult", "<f8"),
        ("ef_construction", "<u8"),
    ]
)


HEADER_NAMES: tuple[str, ...] = HEADER.names or ()  # a structured dtype always has names
_STREAM_ROWS = 4096  # records read per step when cutting the vectors out
RELEASE_ROWS = 8192  # records whose links go into a mapped file between two releases


def _place_links(level0: np.ndarray, links: np.ndarray, off: int, lab: int) -> None:
    level0[:, :off] = links[:, :off]
    level0[:, lab:] = links[:, off:]


def state_from_file(path: Path, live: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """hnswlib's state from its index file, without the live records' vectors: (scalar
    fields, arrays for the snapshot). ``tail`` is the file's upper-level link lists as
    they are, so that loading can write the file back without parsing them."""
    with path.open("rb") as f:
        head = np.frombuffer(f.read(HEADER.itemsize), dtype=HEADER)[0]
        state: dict[str, Any] = {name: head[name].item() for name in HEADER_NAMES}
        n, size = state["cur_element_count"], state["size_data_per_element"]
        off, lab = state["offset_data"], state["label_offset"]
        if state["offset_level0"] != 0 or not off < lab <= size - 8:
            raise ValueError("unexpected hnswlib file layout")
        links = np.empty((n, size - (lab - off)), dtype=np.uint8)
        dead_ids, dead_vecs, deleted = [], [], False
        # Sorted once; each chunk is then binary searches (np.isin sorted all of `live`
        # again for every chunk, most of a large snapshot's time).
        live = np.sort(np.asarray(live, dtype=np.int64))
        last = max(len(live) - 1, 0)
        for start in range(0, n, _STREAM_ROWS):
            m = min(_STREAM_ROWS, n - start)
            recs = np.frombuffer(f.read(m * size), dtype=np.uint8).reshape(m, size)
            links[start : start + m, :off] = recs[:, :off]
            links[start : start + m, off:] = recs[:, lab:]
            deleted = deleted or bool((recs[:, 2] & 1).any())  # hnswlib's DELETE_MARK
            labels = np.ascontiguousarray(recs[:, lab : lab + 8]).view("<u8").ravel()
            labels = labels.astype(np.int64)
            found = (
                live[np.minimum(np.searchsorted(live, labels), last)] == labels
                if len(live)
                else labels < 0
            )
            dead = np.flatnonzero(~found)
            if len(dead):
                dead_ids.append(dead + start)
                dead_vecs.append(np.ascontiguousarray(recs[dead, off:lab]))
        tail = np.frombuffer(f.read(), dtype=np.uint8)
    state.update(has_deletions=deleted, size_links_per_element=state["max_M"] * 4 + 4)
    parts = {
        "links": links,
        "dead": np.concatenate(dead_ids) if dead_ids else np.empty(0, np.int64),
        "dead_vectors": np.concatenate(dead_vecs)
        if dead_vecs
        else np.empty((0, lab - off), np.uint8),
        "tail": tail,
    }
    return state, parts


def tail_arrays(state: dict[str, Any], links: np.ndarray, tail: np.ndarray) -> dict[str, Any]:
    """The arrays of hnswlib's pickled state that the file keeps in other forms: label
    lookups (from the records) and each element's level and upper links (from the tail)."""
    n, off = int(state["cur_element_count"]), int(state["offset_data"])
    per_level = int(state["size_links_per_element"])
    raw = tail.tobytes()
    levels = np.zeros(int(state["max_elements"]), dtype=np.int32)
    chunks, pos = [], 0
    for i in range(n):
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if length:
            levels[i] = length // per_level
            chunks.append(raw[pos : pos + length])
            pos += length
    if pos != len(raw):
        raise ValueError("snapshot tail longer than its link lists")
    labels = np.ascontiguousarray(links[:, off : off + 8]).view("<u8").ravel()
    return {
        "label_lookup_external": labels.copy(),
        "label_lookup_internal": np.arange(n, dtype=np.uint32),
        "element_levels": levels,
        "link_lists": np.frombuffer(b"".join(chunks), dtype=np.int8),
    }


# What fill_level0 needs besides the buffer: links, dead slots and their vectors,
# (offset_data, label_offset), the space, and SQLite's vectors.
Parts = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int], str, Loader]


def fill_level0(
    level0: np.ndarray,
    links: np.ndarray,
    dead: np.ndarray,
    dead_vectors: np.ndarray,
    layout: tuple[int, int],
    space: str,
    vectors: Loader,
    release: Callable[[], None] | None = None,
) -> None:
    """Write every record of hnswlib's level 0 into ``level0``: links from the snapshot,
    live vectors from SQLite, deleted records' vectors from the snapshot.

    ``release``, for a ``level0`` mapped from a file, hands the pages written so far
    back to the page cache: it is called after the links and after each chunk of
    vectors, so the mapping never holds the whole file in this process."""
    n = len(links)
    off, lab = layout
    helper = None
    if release is None:
        # numpy copies without the GIL: the links go in while SQLite is read.
        helper = threading.Thread(
            target=_place_links,
            args=(level0, links, off, lab),
            name="tintdb-load",
            daemon=True,
        )
        helper.start()
    else:
        for start in range(0, n, RELEASE_ROWS):
            part = slice(start, start + RELEASE_ROWS)
            _place_links(level0[part], links[part], off, lab)
            release()
    vecs = level0[:, off:lab].view(np.float32)
    labels = np.ascontiguousarray(links[:, off : off + 8]).view(np.uint64).astype(np.int64)
    labels = labels.ravel() & SEQ_MASK  # the seq of each node
    labels[dead] = -1  # a deleted node, maybe an older generation of a live seq's
    in_order = bool(np.all(labels[1:] > labels[:-1]))  # usual: slots in seq order
    order = np.arange(n) if in_order else np.argsort(labels, kind="stable")
    by_label = labels[order]
    filled = np.zeros(n, dtype=bool)

    def tick(count: int) -> int:
        """Release once RELEASE_ROWS records were written since the last time."""
        if release is None or count < RELEASE_ROWS:
            return count
        release()
        return 0

    written = 0
    try:
        with contextlib.closing(vectors()) as chunks:
            for seqs, block in chunks:
                if space == "cosine":
                    block = unit(block)
                if in_order and len(seqs):
                    # A run of seqs that is a run of slots needs no per-row lookup.
                    a, b = np.searchsorted(by_label, seqs[[0, -1]]).tolist()
                    if b - a == len(seqs) - 1 and np.array_equal(by_label[a : b + 1], seqs):
                        vecs[a : b + 1] = block
                        filled[a : b + 1] = True
                        written = tick(written + len(seqs))
                        continue
                pos = np.minimum(np.searchsorted(by_label, seqs), n - 1)
                hit = by_label[pos] == seqs
                rows = order[pos[hit]]
                vecs[rows] = block[hit]
                filled[rows] = True
                written = tick(written + len(rows))
    finally:
        if helper is not None:
            helper.join()
    for start in range(0, len(dead), RELEASE_ROWS):
        level0[dead[start : start + RELEASE_ROWS], off:lab] = dead_vectors[
            start : start + RELEASE_ROWS
        ]
        if release is not None:
            release()
    filled[dead] = True
    # Records deleted after the snapshot was taken are in neither place; the log replay
    # marks them deleted next. Until then they route like a neighbour.
    for i in np.flatnonzero(~filled).tolist():
        count = int(level0[i, :2].view(np.uint16)[0])
        near = level0[i, 4 : 4 + 4 * count].view(np.uint32)
        done = near[filled[near]]
        vecs[i] = vecs[done[0]] if len(done) else 0


# The members of graph.npz compressed on writing (deflate at its fastest level): the
# links are neighbour numbers, which shrink to about a third (16 MB of a 100k graph to
# 5.6, in about 0.1 s). The vectors of deleted nodes are floats that deflate shrinks by
# a few percent for several times that time, so they are stored as they are. np.load
# reads either way, so files written before read the same.
DEFLATED_MEMBERS = ("links", "tail", "dead")


def write_graph(path: Path, parts: dict[str, np.ndarray]) -> None:
    """Write ``parts`` (links, tail, dead, dead_vectors) as ``graph.npz``, the members in
    DEFLATED_MEMBERS compressed."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True, compresslevel=1) as zf:
        for name, array in parts.items():
            member: str | zipfile.ZipInfo = f"{name}.npy"
            if name not in DEFLATED_MEMBERS:
                member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)


def _releaser(mapped: mmap.mmap) -> Callable[[], None] | None:
    """Drops the pages of a shared file mapping from this process (they stay in the
    page cache, written, and come back on the next touch), so that filling a mapping
    as large as the index does not count the whole file in this process's memory
    beside the index hnswlib then reads from it. Linux's MADV_DONTNEED keeps a shared
    mapping's data; elsewhere nothing is released."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or not sys.platform.startswith("linux"):
        return None
    return lambda: mapped.madvise(advice)


def load_graph(
    path: Path, state: dict[str, Any], space: str, dim: int, vectors: Loader
) -> hnswlib.Index:
    """Put a snapshot's graph and SQLite's vectors back together into hnswlib.

    The records are assembled in hnswlib's own file format, in a scratch file beside
    the snapshots, which hnswlib then loads: the assembled copy sits in the page
    cache, not in this process, so the index is in memory once. Handing hnswlib the
    records in memory instead (its pickled state) held them twice for a moment,
    which set the peak memory of a whole workload. Where the file cannot be made (no
    room), that is the way.
    """
    with np.load(path) as arrays:
        links, tail = arrays["links"], arrays["tail"]
        dead, dead_vectors = arrays["dead"], arrays["dead_vectors"]
    n, size = int(state["cur_element_count"]), int(state["size_data_per_element"])
    off, lab = int(state["offset_data"]), int(state["label_offset"])
    if links.shape != (n, size - (lab - off)) or lab - off != dim * 4:
        raise ValueError("snapshot graph does not match its manifest")
    parts: Parts = (links, dead, dead_vectors, (off, lab), space, vectors)
    scratch = path.parent.parent / f"{LOAD_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    body = HEADER.itemsize + n * size
    head = np.zeros(1, dtype=HEADER)
    for name in HEADER_NAMES:
        head[name] = state[name]
    fd = -1
    try:
        try:
            fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            # Blocks are reserved up front: a full disk is an error here, not a
            # SIGBUS when the mapping below is written.
            os.posix_fallocate(fd, 0, body + len(tail))
            os.pwrite(fd, head.tobytes(), 0)
            os.pwrite(fd, tail.data, body)
        except OSError as exc:
            log.warning("index load in memory (scratch file: %s)", exc)
            return _load_in_memory(state, tail, parts)
        with mmap.mmap(fd, body + len(tail)) as mapped:
            level0 = np.frombuffer(mapped, np.uint8, n * size, HEADER.itemsize)
            fill_level0(level0.reshape(n, size), *parts, release=_releaser(mapped))
            del level0  # the mapping closes only once no array points into it
        del links, dead, dead_vectors, parts  # load_index allocates the whole index next
        index = hnswlib.Index(space=hnsw_space(space), dim=dim)
        index.load_index(str(scratch))
        return index
    finally:
        if fd >= 0:
            os.close(fd)
            # Dropping a large file's page cache takes a moment; nothing waits. A file
            # left by a process that exits first goes with the next load.
            threading.Thread(target=scratch.unlink, args=(True,), daemon=True).start()


def _load_in_memory(state: dict[str, Any], tail: np.ndarray, parts: Parts) -> hnswlib.Index:
    """The same records assembled in this process and handed over as hnswlib's
    pickled state (which it copies: two copies at once, briefly)."""
    n, size = int(state["cur_element_count"]), int(state["size_data_per_element"])
    level0 = plain_empty((n, size), np.uint8)
    full = tail_arrays(state, parts[0], tail)
    fill_level0(level0, *parts)
    return hnswlib.Index({**state, **full, "data_level0": level0.reshape(-1).view(np.int8)})
