"""Crash-safe file output for the trace.

A search can be killed at any moment (kill -9 included) and then resumed; a
trace file must then be either absent or complete, never half written. Files
are written to a temporary name in the same directory, fsynced, and renamed
over the final name (rename is atomic within one file system); the directory
is fsynced too so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

DEFAULT_MAX_BYTES = 1024 * 1024
TMP_PREFIX = ".stark-tmp-"
TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(rf"^{re.escape(TMP_PREFIX)}(?P<pid>\d+)-.*{re.escape(TMP_SUFFIX)}$")


def truncate_text(text: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Keep the head and the tail of an over-long text with a visible marker between.

    Both ends matter in a log: the head says what ran, the tail says how it ended.
    The result is at most about `max_bytes` UTF-8 bytes (plus the marker line).
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    head_bytes = max_bytes // 2
    tail_bytes = max_bytes - head_bytes
    head = data[:head_bytes].decode("utf-8", "ignore")
    tail = data[len(data) - tail_bytes :].decode("utf-8", "ignore")
    dropped = len(data) - len(head.encode()) - len(tail.encode())
    marker = (
        f"\n[... STARK TRACE: {dropped} bytes truncated here "
        f"(file was {len(data)} bytes, limit {max_bytes}) ...]\n"
    )
    return head + marker + tail


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write `text` to `path` so that readers see the old file, or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=TMP_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write(2) on an O_APPEND descriptor.

    Concurrent appenders never interleave inside a line; a kill can at worst
    leave a torn last line, which readers of the index skip.
    """
    if "\n" in line:
        raise ValueError("an index line must not contain a newline")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A torn previous line (killed writer) would swallow this one: start afresh.
        if os.fstat(fd).st_size and not _ends_with_newline(path):
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when the
    block succeeds: `final` appears with all its files, or not at all."""
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=TMP_SUFFIX, dir=final.parent)
    )
    try:
        yield staging
        os.chmod(staging, 0o755)
        _fsync_dir(staging)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


def remove_stale_tmp_files(directory: Path) -> list[Path]:
    """Delete temporary files and folders that a killed writer left behind (their pid is gone)."""
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TMP_NAME.match(entry.name)
        if not match or _pid_alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed
