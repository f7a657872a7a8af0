"""The files the worker and the parent exchange in an evaluation directory, and how
they are signed.

The candidate runs as the same user and can write any of these files, so whatever the
parent acts on (a phase change, the compile heartbeat, the verdict, the compile cache's
build report) carries an HMAC under a per-evaluation secret that only the worker holds.
Both sides import this module; it imports nothing that the worker does not already load.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path

from engine.bench.deadlines import PHASE_ORDER

SIGNED_PHASES = PHASE_ORDER[1:]
ACTIVITY_FILE = "activity"  # the worker's signed compile-activity heartbeat
_json_dumps = json.dumps  # bound before any candidate could patch it (see result_mac)

# The compile cache's integrity protocol (see compile_cache.py and cache_manifest.CacheManifest):
# the parent writes GUARD_FILE (expected .so hashes + a report token) into the eval dir, the
# worker reads and deletes it before the candidate is imported, and reports every build in
# BUILDS_FILE, signed with that token.
CACHE_GUARD_FILE = "cache_guard.json"
CACHE_BUILDS_FILE = "builds.json"
CACHE_DIR_HASH_CHARS = 16  # a build lives in CACHE/ext/<key[:16]>


def sha256_file(path: Path) -> str | None:
    """Hex digest of a file's bytes; None if it can't be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def result_mac(nonce: str, result: dict[str, object]) -> str:
    """HMAC of a worker's verdict under the per-evaluation nonce.

    result.json carries this MAC, never the nonce itself: a candidate thread that reads the
    file after the worker wrote it learns nothing that lets it sign an altered verdict."""
    body = _json_dumps(result, sort_keys=True).encode()
    return hmac.new(nonce.encode(), body, hashlib.sha256).hexdigest()


def read_phase_words(eval_dir: Path) -> list[str]:
    try:
        return (eval_dir / "phase").read_text().split()
    except OSError:
        return []


def run_phase_token(nonce: str, phase: str = "run", extras: Mapping[str, str] | None = None) -> str:
    """Written by the worker after a phase word: proves the *worker* got there, since a
    candidate can write the phase file too. `extras` (key=value words after the token, e.g.
    the reference's measured call time) are covered by the same MAC."""
    return result_mac(nonce, {"phase": phase, **(extras or {})})


def format_phase_line(phase: str, token: str, extras: Mapping[str, str] | None = None) -> str:
    """The phase file's content: the phase word, its token, then key=value extras."""
    tail = "".join(f" {key}={value}" for key, value in (extras or {}).items())
    return f"{phase} {token}{tail}"


def phase_line(nonce: str, phase: str, extras: Mapping[str, str] | None = None) -> str:
    """The phase file's content for a signed phase."""
    return format_phase_line(phase, run_phase_token(nonce, phase, extras), extras)


def authentic_phase_info(words: list[str], nonce: str) -> tuple[str, dict[str, str]] | None:
    """(phase, extras) the worker itself announced, or None for anything a candidate could
    forge without the nonce. A bare "compile" (the old unsigned form) moves no deadline."""
    if words == ["compile"]:
        return "compile", {}
    if len(words) < 2 or words[0] not in SIGNED_PHASES:
        return None
    pairs = [word.partition("=") for word in words[2:]]
    if any(not sep or not key for key, sep, _ in pairs):
        return None
    extras = {key: value for key, _, value in pairs}
    if hmac.compare_digest(words[1], run_phase_token(nonce, words[0], extras)):
        return words[0], extras
    return None


def authentic_phase(words: list[str], nonce: str) -> str | None:
    """The phase the worker itself announced, or None for anything a candidate could forge."""
    info = authentic_phase_info(words, nonce)
    return info[0] if info else None


def activity_mac(nonce: str, count: int) -> str:
    """Signs the worker's compile-activity heartbeat (see worker.CompileActivity)."""
    return result_mac(nonce, {"activity": count})


def read_activity(eval_dir: Path, nonce: str) -> int | None:
    """The heartbeat counter the worker last wrote, if authentic."""
    try:
        words = (eval_dir / ACTIVITY_FILE).read_text().split()
    except OSError:
        return None
    if len(words) != 2 or not words[0].isdigit():
        return None
    count = int(words[0])
    return count if hmac.compare_digest(words[1], activity_mac(nonce, count)) else None


# Signed partial verdicts (worker.Evaluation.checkpoint), kept if a later deadline kills it.
CHECKPOINT_FILE = "checkpoint.json"

# The device lease (lease.py): the parent writes this MAC into LEASE_GRANT_FILE once it holds
# the lease; the worker starts timing only when the file holds the MAC it computes itself.
LEASE_GRANT_FILE = "lease_grant"


def lease_grant_mac(nonce: str) -> str:
    return result_mac(nonce, {"lease": "granted"})
