"""A content-addressed cache for `torch.utils.cpp_extension` builds.

Inside the worker, `load_inline` and `load` are replaced by wrappers that build
into `CACHE/ext/<sha256(sources + flags + toolchain + arch)[:16]>` under the
module name `<name>_<hash[:12]>`. So an identical candidate is never rebuilt (a
hit imports the finished `.so` directly, no ninja), and two candidates that
pick the same `name=` never share a build directory or a module name.

Integrity: a candidate runs as the same user and could overwrite a cached `.so`
that a later, honest candidate would then load. So when the parent hands over
the hashes it trusts (`CACHE_GUARD_FILE` in the eval dir, read and deleted here
before the candidate is imported), a cached build is loaded only if its `.so`
hashes to the expected value; anything else (a changed or a planted `.so`) is
deleted and rebuilt, and reported as tampered. Every build is reported to the
parent in `CACHE_BUILDS_FILE`, signed with the guard's token; the parent keeps
the authoritative manifest (see `cache_manifest.CacheManifest`).

Concurrency: a build holds an `flock` on `<dir>.lock` (released by the kernel if
the builder dies), so two workers building the same hash wait for each other,
and a torch `FileBaton` lock file found while we hold the flock can only be a
leftover of a killed build; it is removed instead of being waited on forever.

Several processes (the workers of a batch) share one cache. Their parents share the
manifest (`CacheManifest`, peers with one key), but a parent learns a build only when the
evaluation that made it ends, so a worker can meet a finished build its parent has not
heard of yet. The build's marker names the parent that made it (`owner`); while that parent
is alive (it holds `owners/<owner>.lock`) the build is a peer's, not tampering: it is neither
loaded (nobody vouched for it) nor deleted (its maker may be loading it), and this worker
builds a private copy in its eval dir instead, reported to nobody. A build whose maker is
gone and that no parent recorded is removed and rebuilt. Only a build that does not match
the hash the parent handed over is reported as tampered.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import hmac
import importlib.util
import inspect
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.utils.cpp_extension as cpp_extension

from engine.atomic_io import SCRATCH_FILE, atomic_write_text
from engine.bench.build_log import describe_failure, file_size, read_from
from engine.bench.cache_manifest import OWNERS_DIR, owner_alive
from engine.bench.signed_files import (
    CACHE_BUILDS_FILE,
    CACHE_DIR_HASH_CHARS,
    CACHE_GUARD_FILE,
    result_mac,
    sha256_file,
)
from engine.bench.toolchain import (
    as_list,
    compiler_id,
    cuda_arch_list,
    device_arch,
    missing_cuda_toolchain,
    nvcc_id,
    wants_cuda,
)

MARKER = "stark_built.json"
HASH_CHARS = CACHE_DIR_HASH_CHARS
NAME_HASH_CHARS = 12
# Arguments that do not change what gets built.
_NOT_HASHED = {"name", "build_directory", "verbose", "keep_intermediates"}
_LITERAL_PYBIND = re.compile(r"PYBIND11_MODULE\s*\(\s*(?!TORCH_EXTENSION_NAME\b)\w+")
PRIVATE_DIR = "private_ext"  # in the eval dir: copies of builds a peer has not vouched for
# Bound when the fork server imports this module, before any candidate could patch them.
_os_write = os.write
_json_dumps = json.dumps


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
    module: str = ""
    sha256: str | None = None  # of the built .so, taken right after the build
    private: bool = False  # built in the eval dir beside a peer's unvouched build; not reported


@dataclass
class CompileCache:
    """Patches torch's JIT extension loaders in this (worker) process."""

    cache_dir: Path
    device: str
    log_path: Path | None = None
    # Where the parent's guard file is and the build report goes; default: log_path's dir.
    report_dir: Path | None = None
    records: list[BuildRecord] = field(default_factory=list)
    # key -> sha256 of the .so the parent trusts; None: unguarded (no parent guard file).
    expected: dict[str, str] | None = None
    tampered: list[str] = field(default_factory=list)  # keys whose cached .so was not trusted
    owner: str = ""  # the parent's id (its CacheManifest), written into each build's marker
    _report_token: str = ""
    _originals: dict[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def ext_dir(self) -> Path:
        return self.cache_dir / "ext"

    def install(self) -> None:
        self.ext_dir.mkdir(parents=True, exist_ok=True)
        self._read_guard()
        os.environ["TORCH_EXTENSIONS_DIR"] = str(self.cache_dir / "torch_extensions")
        if self.device == "cuda" and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list(*torch.cuda.get_device_capability())
        for fn_name in ("load_inline", "load"):
            original = getattr(cpp_extension, fn_name)
            self._originals[fn_name] = original
            setattr(cpp_extension, fn_name, self._wrap(fn_name, original))

    def _read_guard(self) -> None:
        """Take the parent's expected hashes and report token, and delete the file, before
        any candidate code runs (it never sees which hashes are trusted or the token)."""
        if self.report_dir is None and self.log_path is not None:
            self.report_dir = self.log_path.parent
        if self.report_dir is None:
            return
        path = self.report_dir / CACHE_GUARD_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
        try:
            data = json.loads(text)
            expected = {str(k): str(v) for k, v in dict(data.get("expected") or {}).items()}
            token = str(data["token"])
            owner = str(data.get("owner") or "")
        except (ValueError, TypeError, KeyError, AttributeError):
            expected, token, owner = {}, "", ""  # unreadable guard: trust nothing in the cache
        self.expected, self._report_token, self.owner = expected, token, owner

    def _trusted(self, key: str, library: Path) -> bool:
        if self.expected is None:
            return True
        expected = self.expected.get(key)
        return expected is not None and hmac.compare_digest(expected, sha256_file(library) or "")

    def _peer_build(self, key: str, build_dir: Path) -> bool:
        """A finished build the parent has no hash for, made for a parent that is still alive:
        a peer's, not yet recorded (see the module docstring)."""
        if self.expected is None or key in self.expected:
            return False
        try:
            owner = str(json.loads((build_dir / MARKER).read_text()).get("owner") or "")
        except (OSError, ValueError, AttributeError):
            return False
        return owner != self.owner and owner_alive(self.cache_dir / OWNERS_DIR, owner)

    def _quarantine(self, key: str, build_dir: Path, tampered: bool) -> None:
        """Remove a build dir we can't trust (a planted or changed .so, an orphan no parent
        recorded, or a half-finished build whose objects ninja would otherwise reuse). Only a
        .so that differs from the hash the parent handed over is tampering."""
        if tampered:
            self.tampered.append(key)
            _note(f"cached build {build_dir.name} does not match the harness's record; rebuilt")
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True, exist_ok=True)
        self._report()

    def _report(self) -> None:
        """Tell the parent what was built (and what was found tampered), signed."""
        if self.report_dir is None or self.expected is None:
            return
        body: dict[str, object] = {
            "builds": [
                {"key": r.key, "module": r.module, "sha256": r.sha256}
                for r in self.records
                if not r.hit and not r.private and r.error is None and r.sha256
            ],
            "tampered": list(self.tampered),
        }
        text = _json_dumps({**body, "mac": result_mac(self._report_token, body)})
        with contextlib.suppress(OSError):
            atomic_write_text(self.report_dir / CACHE_BUILDS_FILE, text, **SCRATCH_FILE)

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
                    for p in as_list(value)
                ]
            elif isinstance(value, list | tuple | dict | str):
                described[key] = as_list(value)
            else:
                described[key] = value
        cuda = wants_cuda(fn_name, arguments)
        described["toolchain"] = {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "arch": device_arch(self.device),
            "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if cuda else None,
            "compiler": compiler_id(),
            "nvcc": nvcc_id() if cuda else None,
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
        sources = as_list(arguments.get("cpp_sources")) + as_list(arguments.get("cuda_sources"))
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

        library = _finished_library(build_dir, module_name, standalone)
        if library is not None and self._trusted(key, library):
            self.records.append(BuildRecord(name, key, True, time.perf_counter() - start))
            return _import_library(library, module_name, is_python_module)

        missing = missing_cuda_toolchain(fn_name, arguments)
        if missing is not None:
            self.records.append(BuildRecord(name, key, False, time.perf_counter() - start, missing))
            raise ExtensionBuildError(missing)

        build_dir.mkdir(parents=True, exist_ok=True)
        log_offset = file_size(self.log_path)
        with self._exclusive(build_dir):
            library = _finished_library(build_dir, module_name, standalone)
            if library is not None and self._trusted(key, library):
                # another worker finished it while we waited
                self.records.append(BuildRecord(name, key, True, time.perf_counter() - start))
                return _import_library(library, module_name, is_python_module)
            peer_build = library is not None and self._peer_build(key, build_dir)
            if self.expected is not None and not standalone and not peer_build:
                known = key in self.expected
                self._quarantine(key, build_dir, tampered=library is not None and known)
            if not peer_build:
                return self._build_in(
                    build_dir, original, arguments, (name, key, module_name), start, log_offset
                )
        # Outside the lock: the private copy is ours alone, and peers may want the shared one.
        assert self.report_dir is not None  # a guarded worker always has one
        return self._build_in(
            self.report_dir / PRIVATE_DIR / key[:HASH_CHARS],
            original,
            arguments,
            (name, key, module_name),
            start,
            log_offset,
            private=True,
        )

    def _build_in(
        self,
        build_dir: Path,
        original: Callable[..., Any],
        arguments: dict[str, Any],
        names: tuple[str, str, str],
        start: float,
        log_offset: int,
        *,
        private: bool = False,
    ) -> Any:
        """Run torch's build into `build_dir`; a shared one is recorded, reported and marked
        finished (the caller holds its lock), a private one only recorded."""
        name, key, module_name = names
        is_python_module = bool(arguments.get("is_python_module", True))
        standalone = bool(arguments.get("is_standalone", False))
        build_dir.mkdir(parents=True, exist_ok=True)
        if private:
            _note(
                f"extension {key[:HASH_CHARS]} was just built by another worker whose harness "
                "has not recorded it yet; building a private copy"
            )
        with contextlib.suppress(FileNotFoundError):
            (build_dir / "lock").unlink()  # stale torch baton of a killed build
        arguments.update(name=module_name, build_directory=str(build_dir), verbose=True)
        try:
            result = original(**arguments)
        except Exception as exc:
            raise self._failure(name, key, start, exc, log_offset) from exc
        if private:
            record = BuildRecord(name, key, False, time.perf_counter() - start, private=True)
            record.module = module_name
            self.records.append(record)
            return result
        digest = None if standalone else sha256_file(build_dir / f"{module_name}.so")
        if self.expected is not None and digest is not None:
            self.expected[key] = digest  # a second identical call in this worker is a hit
        record = BuildRecord(name, key, False, time.perf_counter() - start)
        record.module, record.sha256 = module_name, digest
        self.records.append(record)
        self._report()  # before the marker: a build is never finished but unreported
        marker = {
            "module": module_name,
            "name": name,
            "python_module": is_python_module,
            "owner": self.owner,
        }
        (build_dir / MARKER).write_text(json.dumps(marker))
        return result

    def _failure(
        self, name: str, key: str, start: float, exc: Exception, log_offset: int
    ) -> ExtensionBuildError:
        output = read_from(self.log_path, log_offset) + "\n" + str(exc)
        summary, excerpt = describe_failure(output, exc)
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


def _note(text: str) -> None:
    with contextlib.suppress(OSError):
        _os_write(2, f"[stark] {text}\n".encode())


def _finished_library(build_dir: Path, module_name: str, standalone: bool) -> Path | None:
    """The .so of a finished build (marker written after a successful build), or None."""
    if standalone or not (build_dir / MARKER).exists():
        return None
    library = build_dir / f"{module_name}.so"
    return library if library.exists() else None


def _import_library(library: Path, module_name: str, is_python_module: bool) -> Any:
    """Import a finished build without invoking ninja."""
    if not is_python_module:
        torch.ops.load_library(str(library))
        return str(library)
    spec = importlib.util.spec_from_file_location(module_name, library)
    if spec is None or spec.loader is None:
        raise ExtensionBuildError(f"cannot import cached extension {library}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
