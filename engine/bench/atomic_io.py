"""Atomic file writes for the worker, with os functions bound at import: a candidate that
patches `os` after loading cannot redirect or fake what the harness writes."""

from __future__ import annotations

import os
from pathlib import Path

_os_open, _os_write, _os_close, _os_replace = os.open, os.write, os.close, os.replace


def write_atomic(path: Path, text: str) -> None:
    """Write beside `path`, then rename over it: readers see the old or the new file, whole."""
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    fd = _os_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        data = text.encode()
        while data:
            data = data[_os_write(fd, data) :]
    finally:
        _os_close(fd)
    _os_replace(tmp, str(path))
