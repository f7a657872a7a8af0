"""The parent's record of which compiled extension each compile-cache key must hold,
so one candidate cannot plant a .so that a later candidate loads."""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import secrets
from pathlib import Path

from engine.atomic_io import atomic_write_text
from engine.bench.signed_files import (
    CACHE_BUILDS_FILE,
    CACHE_DIR_HASH_CHARS,
    CACHE_GUARD_FILE,
    result_mac,
    sha256_file,
)

MANIFEST_FILE = "manifest.json"
_KEY = re.compile(r"[0-9a-f]{64}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CacheManifest:
    """The parent's record of which compiled extension (.so) each cache key must contain.

    Workers run candidates as the same user, so a candidate can overwrite a cached .so that a
    later honest candidate would load. The parent hands the expected hashes to each worker
    (which rebuilds anything that does not match), learns new builds from the worker's signed
    report, and after each evaluation notices a known .so that changed under it (a cheap
    `stat` first, a hash only when that changed). The in-memory copy is authoritative for
    this Benchmarker's lifetime; manifest.json only carries it to the next process.

    Residual risks (same uid, so not closable from here): a candidate can edit manifest.json
    between two processes; it can swap its OWN build's .so in the instant between link and
    hash, or take the report token from its worker's memory. Two Benchmarkers sharing one
    cache dir don't know each other's builds: each rebuilds (and flags) the other's."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.path = cache_dir / MANIFEST_FILE
        self.hashes: dict[str, str] = {}  # key -> sha256 of the .so
        self.modules: dict[str, str] = {}  # key -> module name (the .so's file name)
        self._load()
        self._seen = {key: _signature(self.library(key)) for key in self.hashes}

    def library(self, key: str) -> Path:
        return self.cache_dir / "ext" / key[:CACHE_DIR_HASH_CHARS] / f"{self.modules[key]}.so"

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            hashes, modules = dict(data["so_sha256"]), dict(data["so_module"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        for key, digest in hashes.items():
            module = modules.get(key)
            if (
                _KEY.fullmatch(str(key))
                and isinstance(digest, str)
                and _KEY.fullmatch(digest)
                and isinstance(module, str)
                and _MODULE.fullmatch(module)
            ):
                self.hashes[key], self.modules[key] = digest, module

    def save(self) -> None:
        """Atomically: a reader never sees half a manifest."""
        data = {"version": 1, "so_sha256": self.hashes, "so_module": self.modules}
        atomic_write_text(self.path, json.dumps(data, sort_keys=True))

    def guard(self, eval_dir: Path) -> str:
        """Write the expected hashes for the worker; returns the token its report is signed
        with (the worker deletes the file before the candidate is imported)."""
        token = secrets.token_hex(16)
        guard = {"expected": self.hashes, "token": token}
        (eval_dir / CACHE_GUARD_FILE).write_text(json.dumps(guard))
        return token

    def settle(self, eval_dir: Path, token: str) -> list[str]:
        """After an evaluation: learn its builds, then audit the known ones. Returns lines
        explaining any tampering found (empty if none)."""
        problems = self._absorb(eval_dir, token)
        problems += self._audit()
        return problems

    def _absorb(self, eval_dir: Path, token: str) -> list[str]:
        """Learn this evaluation's builds from the worker's signed report, each checked
        against the file it names."""
        try:
            report = json.loads((eval_dir / CACHE_BUILDS_FILE).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            report = None
        if not isinstance(report, dict):
            return ["the compile-cache report is unreadable"]
        body = {"builds": report.get("builds"), "tampered": report.get("tampered")}
        mac = report.get("mac")
        if not (
            isinstance(mac, str)
            and hmac.compare_digest(mac, result_mac(token, body))
            and isinstance(body["builds"], list)
            and isinstance(body["tampered"], list)
        ):
            return ["the compile-cache report was not written by the harness"]
        problems = [
            f"cached extension {str(key)[:CACHE_DIR_HASH_CHARS]} was not the one built "
            "earlier; it was rebuilt"
            for key in body["tampered"]
        ]
        changed = False
        for build in body["builds"]:
            key = build.get("key") if isinstance(build, dict) else None
            module = build.get("module") if isinstance(build, dict) else None
            if not (isinstance(key, str) and _KEY.fullmatch(key)):
                continue
            if not (isinstance(module, str) and _MODULE.fullmatch(module)):
                continue
            self.modules[key] = module
            actual = sha256_file(self.library(key))
            if actual is not None and actual == build.get("sha256"):
                changed |= self.hashes.get(key) != actual
                self.hashes[key] = actual
                self._seen[key] = _signature(self.library(key))
            else:
                changed |= self.hashes.pop(key, None) is not None
                self.modules.pop(key, None)
                problems.append(
                    f"extension {key[:CACHE_DIR_HASH_CHARS]} was changed after it was built "
                    "in this evaluation; it will be rebuilt"
                )
        if changed:
            with contextlib.suppress(OSError):
                self.save()
        return problems

    def _audit(self) -> list[str]:
        """Known .so files that changed since we last looked (only this evaluation's worker
        can have done it). The entry keeps its hash, so the next use rebuilds it."""
        problems = []
        for key in list(self.hashes):
            library = self.library(key)
            signature = _signature(library)
            if signature == self._seen.get(key):
                continue
            self._seen[key] = signature
            if signature is not None and sha256_file(library) != self.hashes[key]:
                problems.append(
                    f"cached extension {key[:CACHE_DIR_HASH_CHARS]} was overwritten during "
                    "this evaluation"
                )
        return problems


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """Changes whenever the file's content can have (ctime can't be set back by a user)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
