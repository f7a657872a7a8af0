"""Import reference and candidate files by path, and describe how an import failed.

Modules are loaded from their real files (not exec'd strings) so tracebacks,
`inspect.getsource` and Triton's `@triton.jit` all see the source. Each gets a
unique module name so two evaluations (or a reference and a candidate that
share a name) never meet in `sys.modules`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import traceback
import uuid
from dataclasses import dataclass
from types import ModuleType, TracebackType

from engine.bench.result import ErrorLocation

REQUIRED_REFERENCE_NAMES = ("Model", "get_inputs", "get_init_inputs")


def import_from_path(path: str, prefix: str) -> ModuleType:
    """Execute the file at `path` as a fresh module named `<prefix>_<random>`."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and triton look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def missing_names(module: ModuleType, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not hasattr(module, n)]


def location_in(tb: TracebackType | None, path: str) -> ErrorLocation | None:
    """The innermost traceback frame that lies in `path` (the candidate file)."""
    wanted = os.path.realpath(path)
    found: ErrorLocation | None = None
    for frame, lineno in traceback.walk_tb(tb):
        if os.path.realpath(frame.f_code.co_filename) == wanted:
            found = ErrorLocation(line=lineno, function=frame.f_code.co_name)
    return found


def syntax_error_location(exc: BaseException, path: str) -> ErrorLocation | None:
    """SyntaxErrors carry their line on the exception, not in a frame."""
    if (
        isinstance(exc, SyntaxError)
        and exc.filename
        and exc.lineno
        and os.path.realpath(exc.filename) == os.path.realpath(path)
    ):
        return ErrorLocation(line=exc.lineno, function="<module>")
    return None


_DEVICE_ERROR = re.compile(r"CUDA error|CUBLAS_STATUS|CUDNN_STATUS|cuDNN error|device-side assert")


def one_line(exc: BaseException) -> str:
    """`Type: last line of the message`, the form every verdict error takes. CUDA errors are
    the exception: their last lines are generic advice, so the `CUDA error: ...` line wins."""
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    device_lines = [line for line in lines if _DEVICE_ERROR.search(line)]
    last = device_lines[0] if device_lines else (lines[-1] if lines else "")
    name = type(exc).__name__
    if isinstance(exc, SyntaxError):
        last = f"{exc.msg} (line {exc.lineno})"
    return f"{name}: {last}" if last else name


@dataclass(slots=True)
class ImportFailure:
    """Why a candidate could not be imported, ready to go into an EvalResult."""

    stage: str  # "import" | "compile"
    error: str
    location: ErrorLocation | None
    log: str = ""


def describe_import_failure(exc: BaseException, path: str) -> ImportFailure:
    location = location_in(exc.__traceback__, path) or syntax_error_location(exc, path)
    if isinstance(exc, SystemExit):
        return ImportFailure(
            "import", f"candidate called sys.exit({exc.code!r}) at import", location
        )
    if isinstance(exc, KeyboardInterrupt):
        return ImportFailure("import", "candidate raised KeyboardInterrupt at import", location)
    return ImportFailure("import", f"import failed: {one_line(exc)}", location)
