"""Online backup and restore of a store on disk.

A backup is a consistent copy of a store taken while it is in use: SQLite's online
backup API copies the database file inside one read transaction on the source, so
writers (in this process or others) go on meanwhile, in WAL mode, and the copy holds
exactly the transactions committed before that transaction began, which is the
backup's *start point*. ``BackupInfo.lsn`` names it: the last change-log position in
the copy (every write call appends one; see docs/design.md).

Index snapshots are copied too when one fits the copy (its lsn between the copied
collection's log floor and its last lsn): they are immutable once written, so copying
one is safe even while newer ones appear, and the copy then opens without rebuilding
its graphs. A collection without a fitting snapshot is rebuilt from SQLite on first
use, as after any lost snapshot.

A backup is itself a store: open it with ``PersistentClient(path)``; restoring is
copying it back the same way (``tintdb restore``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["BackupInfo", "backup_backend", "backup_store", "restore_store"]

DB_FILENAME = "tintdb.sqlite3"
INDEX_DIR = "index"


@dataclass
class BackupInfo:
    """What a backup holds: ``lsn`` is its start point (the last change included)."""

    path: Path
    lsn: int
    started_at: float  # time.time() when the read transaction began
    seconds: float
    bytes: int
    collections: int
    index_snapshots: int  # collections whose index snapshot was copied


def _empty_target(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InvalidArgumentError(
            f"{dest} exists and is not empty: a backup or restore goes to a new or empty directory"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_lsn(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'ops'").fetchone()
    return int(row[0]) if row else 0


def _copy_file_database(source: sqlite3.Connection, target: Path) -> tuple[int, float]:
    """``_copy_database`` from a connection of the backup's own, in its own read
    transaction (the snapshots are copied after it ends)."""
    source.execute("BEGIN")
    try:
        return _copy_database(source, target)
    finally:
        source.execute("COMMIT")


def _copy_database(source: sqlite3.Connection, target: Path) -> tuple[int, float]:
    """Copy ``source``, inside a read transaction the caller holds open, into a new
    file ``target``; returns the start point's lsn and when it began."""
    out = sqlite3.connect(str(target))
    try:
        # The read transaction starts at its first read: this one.
        lsn = _last_lsn(source)
        started = time.time()
        source.backup(out, pages=-1)  # every page in one step, inside that transaction
        if _last_lsn(out) != lsn:
            raise InvalidArgumentError("the backup does not match its start point")  # never seen
        out.execute("PRAGMA journal_mode = WAL").fetchall()
        check = out.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise InvalidArgumentError(f"the copy fails SQLite's check: {check[:3]}")
    finally:
        out.close()
    with open(target, "rb") as f:
        os.fsync(f.fileno())
    return lsn, started


def _copy_snapshots(source: Path, target: Path, copied_db: Path) -> tuple[int, int]:
    """Copy each collection's newest index snapshot that fits the copied database."""
    conn = sqlite3.connect(f"file:{copied_db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, last_lsn, log_floor FROM collections").fetchall()
    finally:
        conn.close()
    copied = 0
    for cid, last_lsn, floor in rows:
        folder = source / INDEX_DIR / cid
        fits = []
        with contextlib.suppress(OSError):
            for snap in folder.glob("v*"):
                with contextlib.suppress(ValueError):
                    if floor <= int(snap.name[1:]) <= last_lsn:
                        fits.append(snap)
        for snap in sorted(fits, reverse=True):
            dest = target / INDEX_DIR / cid / snap.name
            try:
                shutil.copytree(snap, dest)
            except (OSError, shutil.Error):  # replaced meanwhile: rebuilt on first use
                shutil.rmtree(dest, ignore_errors=True)
                continue
            for f in dest.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            _fsync_dir(dest)
            copied += 1
            break
    return copied, len(rows)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def backup_store(source: Path, dest: Path) -> BackupInfo:
    """A consistent copy of the store at ``source`` in the new directory ``dest``."""
    began = time.monotonic()
    source, dest = Path(source).expanduser(), Path(dest).expanduser()
    db = source / DB_FILENAME
    if not db.is_file():
        raise InvalidArgumentError(f"no tintdb store at {source}")
    _empty_target(dest)
    conn = sqlite3.connect(str(db), timeout=60.0)
    try:
        conn.execute("PRAGMA busy_timeout = 60000")
        return _finish(
            dest, began, lambda tmp: _copy_file_database(conn, tmp / DB_FILENAME), source
        )
    finally:
        conn.close()


def backup_backend(backend: Any, dest: Path) -> BackupInfo:
    """``Client.backup``: a store on disk is copied as ``backup_store`` does; one in
    memory is copied from its own connection, with this process's writes held off."""
    path = getattr(backend, "path", None)
    store = getattr(backend, "store", None)
    if getattr(backend, "dsn", None) is not None:
        raise InvalidArgumentError(
            "backup() of a store in PostgreSQL is PostgreSQL's own (pg_dump, or the "
            "service's snapshots and point-in-time recovery); `tintdb copy postgresql://... "
            "DIR` copies it into a tintdb store on disk"
        )
    if store is None:
        raise InvalidArgumentError(
            "backup() copies a store this process opens; for a server, run "
            "`tintdb backup --path <its data directory> DEST` on its machine"
        )
    if path is not None:
        return backup_store(Path(path), dest)
    began = time.monotonic()
    dest = Path(dest).expanduser()
    _empty_target(dest)
    with store.read() as conn:  # holds the store's lock: this process's writes wait
        return _finish(dest, began, lambda tmp: _copy_database(conn, tmp / DB_FILENAME), None)


def _finish(dest: Path, began: float, copy_db: Any, source: Path | None) -> BackupInfo:
    """Build the copy beside ``dest`` and rename it into place: a directory under the
    final name is always a whole backup."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        lsn, started = copy_db(tmp)
        snapshots, collections = (
            _copy_snapshots(source, tmp, tmp / DB_FILENAME) if source is not None else (0, 0)
        )
        if source is None:
            snapshots, collections = 0, _count_collections(tmp / DB_FILENAME)
        _fsync_dir(tmp)
        if dest.exists():
            dest.rmdir()  # checked empty above
        os.rename(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BackupInfo(
        path=dest,
        lsn=lsn,
        started_at=started,
        seconds=time.monotonic() - began,
        bytes=_size(dest),
        collections=collections,
        index_snapshots=snapshots,
    )


def _count_collections(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM collections").fetchone()[0])
    finally:
        conn.close()


def restore_store(backup: Path, dest: Path) -> BackupInfo:
    """Put a backup in place as the store at ``dest`` (a new or empty directory): the
    backup is checked by SQLite and copied as a backup is, so it stays untouched."""
    backup, dest = Path(backup).expanduser(), Path(dest).expanduser()
    if not (backup / DB_FILENAME).is_file():
        raise InvalidArgumentError(f"{backup} is not a tintdb backup (no {DB_FILENAME})")
    if (dest / DB_FILENAME).exists():
        raise InvalidArgumentError(
            f"{dest} already holds a store: restore into a new or empty directory (move the "
            "old one aside first, with every server and client on it stopped)"
        )
    return backup_store(backup, dest)
