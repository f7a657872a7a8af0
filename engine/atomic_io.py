"""The one place that writes files atomically: a reader (or a resumed run) sees the old
file or the whole new one, never half of it, even after kill -9.

Every writer in the engine uses it: the trace, the task directory, the benchmark
worker's result/phase/heartbeat files, the compile-cache manifest and its build log.
It imports nothing from the engine (and not torch), so any layer may use it.

The os functions are bound when this module is imported. The benchmark worker's fork
server imports it before any candidate exists, so a candidate that later patches
`os.replace` or `os.open` cannot redirect or fake what the harness writes.

Temporary names are `.stark-tmp-<pid>-<n>.tmp` beside the target, so
`remove_stale_tmp_files` can tell a killed writer's leftovers from a live one's.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".stark-tmp-"
TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(rf"^{re.escape(TMP_PREFIX)}(?P<pid>\d+)-.*{re.escape(TMP_SUFFIX)}$")
_MAX_NAME_TRIES = 1000  # stale files of a dead process with our pid are skipped, boundedly

_os_open, _os_write, _os_close, _os_replace = os.open, os.write, os.close, os.replace
_os_fsync, _os_fchmod, _os_unlink, _os_mkdir = os.fsync, os.fchmod, os.unlink, os.mkdir
_os_getpid, _os_rename, _os_kill = os.getpid, os.rename, os.kill
_sequence = itertools.count()  # next() is atomic under the GIL: threads never share a name
# For files that live as long as one evaluation (the worker's verdict, phase, heartbeat):
# private to the user, and not fsynced, since surviving the writer's death is enough.
SCRATCH_FILE: dict[str, Any] = {"mode": 0o600, "durable": False}


def _tmp_name(directory: Path, *, pid: int) -> str:
    return str(directory / f"{TMP_PREFIX}{pid}-{next(_sequence)}{TMP_SUFFIX}")


def _make_parents(directory: Path) -> None:
    """`mkdir -p` with the bound os.mkdir (pathlib would look os.mkdir up at call time)."""
    missing: list[Path] = []
    current = directory
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            _os_mkdir(folder, 0o755)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` survive a power cut (where the file system allows)."""
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = _os_open(directory, os.O_RDONLY)
        try:
            _os_fsync(fd)
        finally:
            _os_close(fd)


def _open_fresh(directory: Path) -> tuple[int, str]:
    pid = _os_getpid()
    for _ in range(_MAX_NAME_TRIES):
        name = _tmp_name(directory, pid=pid)
        try:
            return _os_open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory} after {_MAX_NAME_TRIES} tries")


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Write `data` beside `path`, then rename it over `path`.

    `durable` also fsyncs the file and its directory, so the new content survives a
    power cut; without it the write survives only the writer's death (enough for files
    that live as long as one evaluation, and much cheaper for a heartbeat)."""
    path = Path(path)
    try:
        fd, tmp = _open_fresh(path.parent)
    except FileNotFoundError:
        _make_parents(path.parent)
        fd, tmp = _open_fresh(path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[_os_write(fd, view) :]
            _os_fchmod(fd, mode)
            if durable:
                _os_fsync(fd)
        finally:
            _os_close(fd)
        _os_replace(tmp, str(path))
    except BaseException:
        with contextlib.suppress(OSError):
            _os_unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, mode: int = 0o644, durable: bool = True) -> None:
    """`atomic_write_bytes` of `text` as UTF-8 (lone surrogates from odd file names kept)."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"), mode=mode, durable=durable)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write(2) on an O_APPEND descriptor.

    Concurrent appenders never interleave inside a line; a kill can at worst
    leave a torn last line, which readers of the index skip.
    """
    if "\n" in line:
        raise ValueError("an index line must not contain a newline")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (line + "\n").encode("utf-8")
    fd = _os_open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A torn previous line (killed writer) would swallow this one: start afresh.
        if os.fstat(fd).st_size and not _ends_with_newline(path):
            data = b"\n" + data
        _os_write(fd, data)
        _os_fsync(fd)
    finally:
        _os_close(fd)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name and rename it into place when the
    block succeeds: `final` appears with all its files, or not at all."""
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    pid = _os_getpid()
    for _ in range(_MAX_NAME_TRIES):
        staging = Path(_tmp_name(final.parent, pid=pid))
        try:
            _os_mkdir(staging, 0o700)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"no free temporary name in {final.parent}")
    try:
        yield staging
        os.chmod(staging, 0o755)
        fsync_dir(staging)
        _os_rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(final.parent)


def _pid_alive(pid: int) -> bool:
    if pid == _os_getpid():
        return True
    try:
        _os_kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
