"""A content-addressed cache for `torch.utils.cpp_extension` builds.

Inside the worker, `load_inline` and `load` are replaced by wrappers that build
into `CACHE/ext/<sha256(sources + flags + toolchain + arch)[:16]>` under the
module name `<name>_<hash[:12]>`. So an identical candidate is never rebuilt (a
hit imports the finished `.so` directly, no ninja), and two candidates that
pick the same `name=` never share a build directory or a module name.

Concurrency: a build holds an `flock` on `<dir>.lock` (released by the kernel if
the builder dies), so two workers building the same hash wait for each other,
and a torch `FileBaton` lock file found while we hold the flock can only be a
leftover of a killed build; it is removed instead of being waited on forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.utils.cpp_extension as cpp_extension

MARKER = "stark_built.json"
HASH_CHARS = 16
NAME_HASH_CHARS = 12
# Arguments that do not change what gets built.
_NOT_HASHED = {"name", "build_directory", "verbose", "keep_intermediates"}
_LITERAL_PYBIND = re.compile(r"PYBIND11_MODULE\s*\(\s*(?!TORCH_EXTENSION_NAME\b)\w+")
_ERROR_LINE = re.compile(
    r"(^\S[^\n]*?:\d+(?::\d+)?:\s*(?:fatal )?error\b[^\n]*)"  # gcc/clang: file:line:col: error
    r"|(^\S[^\n]*?\(\d+\):\s*error\b[^\n]*)"  # nvcc: file(line): error
    r"|(^[^\n]*undefined reference[^\n]*)",
    re.MULTILINE,
)
LOG_EXCERPT_CHARS = 8000


class ExtensionBuildError(RuntimeError):
    """A candidate's extension failed to compile or link."""


@dataclass(slots=True)
class BuildRecord:
    name: str
    key: str
    hit: bool
    seconds: float
    error: str | None = None
    log_excerpt: str = ""


@functools.cache
def compiler_id() -> str:
    """First line of `$CXX --version`: a compiler upgrade must invalidate the cache."""
    compiler = os.environ.get("CXX", "c++")
    try:
        out = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{compiler}: unavailable"
    return out.splitlines()[0].strip() if out else compiler


def device_arch(device: str) -> str:
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return f"sm_{major}{minor}"
    return "cpu"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes | os.PathLike):
        return [value]
    if isinstance(value, dict):  # functions= may be a {name: docstring} dict
        return sorted(value.items())
    return list(value)


def first_error_line(text: str) -> str | None:
    match = _ERROR_LINE.search(text)
    if match:
        return match.group(0).strip()
    for line in text.splitlines():
        if "error" in line.lower() and not line.startswith(("[", "FAILED:", "ninja:")):
            return line.strip()
    return None


def _file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path else 0
    except OSError:
        return 0


def _read_from(path: Path | None, offset: int) -> str:
    if path is None:
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(4 << 20).decode("utf-8", errors="replace")
    except OSError:
        return ""


@dataclass
class CompileCache:
    """Patches torch's JIT extension loaders in this (worker) process."""

    cache_dir: Path
    device: str
    log_path: Path | None = None
    records: list[BuildRecord] = field(default_factory=list)
    _originals: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def ext_dir(self) -> Path:
        return self.cache_dir / "ext"

    def install(self) -> None:
        self.ext_dir.mkdir(parents=True, exist_ok=True)
        os.environ["TORCH_EXTENSIONS_DIR"] = str(self.cache_dir / "torch_extensions")
        if self.device == "cuda" and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            major, minor = torch.cuda.get_device_capability()
            os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
        for fn_name in ("load_inline", "load"):
            original = getattr(cpp_extension, fn_name)
            self._originals[fn_name] = original
            setattr(cpp_extension, fn_name, self._wrap(fn_name, original))

    @property
    def failures(self) -> list[BuildRecord]:
        return [r for r in self.records if r.error is not None]

    # -- hashing --------------------------------------------------------------
    def _key(self, fn_name: str, arguments: dict[str, Any]) -> str:
        described: dict[str, Any] = {"loader": fn_name, "name": arguments.get("name")}
        for key, value in sorted(arguments.items()):
            if key in _NOT_HASHED:
                continue
            if fn_name == "load" and key == "sources":
                described[key] = [
                    (str(p), hashlib.sha256(Path(p).read_bytes()).hexdigest())
                    for p in _as_list(value)
                ]
            elif isinstance(value, list | tuple | dict | str):
                described[key] = _as_list(value)
            else:
                described[key] = value
        described["toolchain"] = {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "arch": device_arch(self.device),
            "compiler": compiler_id(),
        }
        blob = json.dumps(described, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    # -- the wrapper ------------------------------------------------------------
    def _wrap(self, fn_name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(original)

        @functools.wraps(original)
        def cached_build(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return self._build(fn_name, original, dict(bound.arguments))

        return cached_build

    def _module_name(self, name: str, key: str, arguments: dict[str, Any]) -> str:
        sources = _as_list(arguments.get("cpp_sources")) + _as_list(arguments.get("cuda_sources"))
        if any(_LITERAL_PYBIND.search(str(src)) for src in sources):
            return name  # the init symbol is hard-coded; the unique directory still isolates it
        return f"{name}_{key[:NAME_HASH_CHARS]}"

    def _build(self, fn_name: str, original: Callable[..., Any], arguments: dict[str, Any]) -> Any:
        start = time.perf_counter()
        name = str(arguments["name"])
        key = self._key(fn_name, arguments)
        build_dir = self.ext_dir / key[:HASH_CHARS]
        module_name = self._module_name(name, key, arguments)
        is_python_module = bool(arguments.get("is_python_module", True))
        standalone = bool(arguments.get("is_standalone", False))

        hit = self._load_finished(build_dir, module_name, is_python_module, standalone)
        if hit is not None:
            self.records.append(BuildRecord(name, key, True, time.perf_counter() - start))
            return hit

        build_dir.mkdir(parents=True, exist_ok=True)
        log_offset = _file_size(self.log_path)
        with self._exclusive(build_dir):
            hit = self._load_finished(build_dir, module_name, is_python_module, standalone)
            if hit is not None:  # another worker finished it while we waited
                self.records.append(BuildRecord(name, key, True, time.perf_counter() - start))
                return hit
            with contextlib.suppress(FileNotFoundError):
                (build_dir / "lock").unlink()  # stale torch baton of a killed build
            arguments.update(name=module_name, build_directory=str(build_dir), verbose=True)
            try:
                result = original(**arguments)
            except Exception as exc:
                raise self._failure(name, key, start, exc, log_offset) from exc
            (build_dir / MARKER).write_text(
                json.dumps({"module": module_name, "name": name, "python_module": is_python_module})
            )
        self.records.append(BuildRecord(name, key, False, time.perf_counter() - start))
        return result

    def _failure(
        self, name: str, key: str, start: float, exc: Exception, log_offset: int
    ) -> ExtensionBuildError:
        output = _read_from(self.log_path, log_offset) + "\n" + str(exc)
        first = first_error_line(output)
        kind = "CUDA compilation" if re.search(r"\.cu[:(]", first or "") else "C++ compilation"
        if first and "undefined reference" in first:
            kind = "linking"
        if first:  # keep file:line:col but drop the long cache path
            first = re.sub(r"^\S*/(?=[^/\s]+[:(]\d)", "", first)
        summary = (
            f"{kind} failed: {first}"
            if first
            else f"extension build failed: {str(exc).strip().splitlines()[-1:] or ['?']}"
        )
        excerpt = ""
        if len(output) > LOG_EXCERPT_CHARS:
            at = output.find(first) if first else 0
            excerpt = output[max(0, at - 500) : max(0, at - 500) + LOG_EXCERPT_CHARS]
        self.records.append(
            BuildRecord(name, key, False, time.perf_counter() - start, summary, excerpt)
        )
        return ExtensionBuildError(summary)

    @contextlib.contextmanager
    def _exclusive(self, build_dir: Path) -> Iterator[None]:
        with open(str(build_dir) + ".lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _load_finished(
        build_dir: Path, module_name: str, is_python_module: bool, standalone: bool
    ) -> Any:
        """Import a finished build without invoking ninja; None if there is none."""
        marker = build_dir / MARKER
        if standalone or not marker.exists():
            return None
        library = build_dir / f"{module_name}.so"
        if not library.exists():
            return None
        if not is_python_module:
            torch.ops.load_library(str(library))
            return str(library)
        spec = importlib.util.spec_from_file_location(module_name, library)
        if spec is None or spec.loader is None:
            return None
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
