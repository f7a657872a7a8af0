"""The parent's record of which compiled extension each compile-cache key must hold,
so one candidate cannot plant a .so that a later candidate loads; shared, under a file lock,
with the other processes of a batch that were given the same peer key."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import weakref
from collections.abc import Iterator
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
LOCK_FILE = "manifest.lock"
OWNERS_DIR = "owners"  # <owner>.lock: flock held by each live parent (see owner_alive)
_KEY = re.compile(r"[0-9a-f]{64}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OWNER = re.compile(r"[0-9a-f]{16}")
_process_peer_key: bytes | None = None


def share_with_peers(key: bytes) -> None:
    """Make every CacheManifest created in this process from now on trust what the other
    processes given the same key record in manifest.json (the workers of one batch: the
    driver makes the key and hands it over in memory, never through a file or the
    environment, which candidates could read)."""
    global _process_peer_key
    if len(key) < 16:
        raise ValueError("a peer key needs at least 16 bytes")
    _process_peer_key = bytes(key)


def owner_alive(owners_dir: Path, owner: str) -> bool:
    """Whether the parent `owner` still holds its lock (the kernel drops it when the parent
    dies). Used by workers to tell a peer's fresh build from an orphan."""
    if not _OWNER.fullmatch(owner or ""):
        return False
    try:
        fd = os.open(owners_dir / f"{owner}.lock", os.O_RDWR)
    except OSError:
        return False  # never existed, or its dead owner's file was cleaned up
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we just took it
    return False


class CacheManifest:
    """The parent's record of which compiled extension (.so) each cache key must contain.

    Workers run candidates as the same user, so a candidate can overwrite a cached .so that a
    later honest candidate would load. The parent hands the expected hashes to each worker
    (which rebuilds anything that does not match), learns new builds from the worker's signed
    report, and after each evaluation notices a known .so that changed under it (a cheap
    `stat` first, a hash only when that changed). The in-memory copy is authoritative for
    this Benchmarker's lifetime (with what authenticated peers add, below); manifest.json
    carries it to the next process.

    Peers: processes created with the same `peer_key` (`share_with_peers`) share what they
    learn. Each entry in manifest.json carries an HMAC under the key of the process that wrote
    it; before each evaluation (`guard`) and after it (`settle`) the file is read under
    `manifest.lock` and the entries whose HMAC verifies are adopted, and every write merges
    into what is on disk instead of replacing it. A candidate can edit the file but cannot
    forge an entry without the key, which lives only in the parents' memory. Without a peer
    key a process gets a key of its own: it trusts only itself, as before. Each parent also
    holds `owners/<owner>.lock` for its lifetime, so a worker can tell a live peer's build that
    is not recorded yet (it builds a private copy) from an orphan (compile_cache.py).

    Residual risks (same uid, so not closable from here): a candidate can edit manifest.json
    before a process starts (the first load trusts it, as one process's file always was); it
    can swap its OWN build's .so in the instant between link and hash, or take the report token
    from its worker's memory."""

    def __init__(self, cache_dir: Path, peer_key: bytes | None = None) -> None:
        self.cache_dir = cache_dir
        self.path = cache_dir / MANIFEST_FILE
        self.hashes: dict[str, str] = {}  # key -> sha256 of the .so
        self.modules: dict[str, str] = {}  # key -> module name (the .so's file name)
        self.peer_key = peer_key or _process_peer_key or secrets.token_bytes(32)
        self._dropped: set[str] = set()  # keys found untrustworthy: removed from the file too
        self._load()
        self._seen = {key: _signature(self.library(key)) for key in self.hashes}
        self.owner = secrets.token_hex(8)
        held = _hold_owner_lock(cache_dir / OWNERS_DIR, self.owner)
        weakref.finalize(self, _release_owner_lock, held)  # when collected, or at exit

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

    def _entry_mac(self, key: str, digest: str, module: str) -> str:
        return hmac.new(
            self.peer_key, f"{key}:{digest}:{module}".encode(), hashlib.sha256
        ).hexdigest()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, object]]:
        """The file's content (or {}) under the manifest lock: peers' read-modify-writes
        never interleave."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cache_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                data = {}
            yield data if isinstance(data, dict) else {}
        finally:
            os.close(fd)

    def _adopt_peers(self, data: dict[str, object]) -> None:
        """Take the entries of the file whose HMAC verifies under our key (ours or a peer's)."""
        hashes, modules, macs = (_table(data, n) for n in ("so_sha256", "so_module", "so_mac"))
        for key, digest in hashes.items():
            module, mac = modules.get(key), macs.get(key)
            if not (
                isinstance(key, str)
                and _KEY.fullmatch(key)
                and isinstance(digest, str)
                and _KEY.fullmatch(digest)
                and isinstance(module, str)
                and _MODULE.fullmatch(module)
                and isinstance(mac, str)
                and hmac.compare_digest(mac, self._entry_mac(key, digest, module))
            ):
                continue
            if self.hashes.get(key) != digest or self.modules.get(key) != module:
                self.hashes[key], self.modules[key] = digest, module
                self._seen[key] = _signature(self.library(key))
                self._dropped.discard(key)

    def refresh(self) -> None:
        """Adopt what peers recorded since we last looked."""
        with self._locked() as data:
            self._adopt_peers(data)

    def save(self) -> None:
        """Merge into the file under the lock, atomically: a reader never sees half a
        manifest, and no writer drops another's entries."""
        with self._locked() as data:
            self._adopt_peers(data)
            merged = {n: _table(data, n) for n in ("so_sha256", "so_module", "so_mac")}
            for key in self._dropped:
                for table in merged.values():
                    table.pop(key, None)
            for key, digest in self.hashes.items():
                module = self.modules[key]
                merged["so_sha256"][key] = digest
                merged["so_module"][key] = module
                merged["so_mac"][key] = self._entry_mac(key, digest, module)
            atomic_write_text(self.path, json.dumps({"version": 1, **merged}, sort_keys=True))

    def guard(self, eval_dir: Path) -> str:
        """Write the expected hashes for the worker (after adopting peers' new entries);
        returns the token its report is signed with (the worker deletes the file before the
        candidate is imported)."""
        with contextlib.suppress(OSError):
            self.refresh()
        token = secrets.token_hex(16)
        guard = {"expected": self.hashes, "token": token, "owner": self.owner}
        (eval_dir / CACHE_GUARD_FILE).write_text(json.dumps(guard))
        return token

    def settle(self, eval_dir: Path, token: str) -> list[str]:
        """After an evaluation: learn its builds, adopt peers' news, then audit the known
        ones. Returns lines explaining any tampering found (empty if none)."""
        problems = self._absorb(eval_dir, token)
        with contextlib.suppress(OSError):
            self.refresh()
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
                self._dropped.add(key)
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


def _table(data: dict[str, object], name: str) -> dict[object, object]:
    """One of the file's tables, copied; {} when missing or not a table."""
    value = data.get(name)
    return dict(value) if isinstance(value, dict) else {}


def _hold_owner_lock(owners_dir: Path, owner: str) -> tuple[int, Path] | None:
    """Lock `owners/<owner>.lock` (released by the kernel if the process dies). The file is
    locked under a scratch name first, so nobody ever sees it unlocked. Dead owners' files
    are swept on the way. None when the cache dir is not writable (then no peer can see us
    either)."""
    with contextlib.suppress(OSError):
        owners_dir.mkdir(parents=True, exist_ok=True)
        for stale in owners_dir.glob("*.lock"):
            if not owner_alive(owners_dir, stale.stem):
                with contextlib.suppress(OSError):
                    stale.unlink()
        scratch = owners_dir / f".{owner}.tmp"
        fd = os.open(scratch, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        final = owners_dir / f"{owner}.lock"
        os.rename(scratch, final)
        return fd, final
    return None


def _release_owner_lock(held: tuple[int, Path] | None) -> None:
    if held is None:
        return
    fd, path = held
    with contextlib.suppress(OSError):
        path.unlink()
    with contextlib.suppress(OSError):
        os.close(fd)


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """Changes whenever the file's content can have (ctime can't be set back by a user)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
