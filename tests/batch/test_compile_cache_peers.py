"""The compile cache shared by the processes of a batch: peers adopt each other's recorded
builds, nobody flags a peer's build as tampering, and an outsider still can't plant one."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench.cache_manifest import (
    MANIFEST_FILE,
    OWNERS_DIR,
    CacheManifest,
    owner_alive,
)
from engine.bench.signed_files import CACHE_BUILDS_FILE, result_mac, sha256_file

ROOT = Path(__file__).resolve().parents[2]


def _record_build(manifest: CacheManifest, eval_dir: Path, key: str, payload: bytes) -> Path:
    """What a worker's signed report makes the parent learn: one build of `key`."""
    token = manifest.guard(eval_dir)
    library = manifest.cache_dir / "ext" / key[:16] / "mod.so"
    library.parent.mkdir(parents=True, exist_ok=True)
    library.write_bytes(payload)
    body = {"builds": [{"key": key, "module": "mod", "sha256": sha256_file(library)}]}
    body["tampered"] = []
    (eval_dir / CACHE_BUILDS_FILE).write_text(json.dumps({**body, "mac": result_mac(token, body)}))
    assert manifest.settle(eval_dir, token) == []
    return library


def test_peers_adopt_recorded_builds_and_outsiders_do_not(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    key = secrets.token_bytes(32)
    first, second = CacheManifest(cache, key), CacheManifest(cache, key)
    outsider = CacheManifest(cache)  # no peer key: trusts only itself
    one, two = "ab" * 32, "cd" * 32
    (tmp_path / "e1").mkdir()
    (tmp_path / "e2").mkdir()
    library = _record_build(first, tmp_path / "e1", one, b"\x7fELF one")
    _record_build(second, tmp_path / "e2", two, b"\x7fELF two")
    # Each write merged into the file instead of replacing it, and each learnt the other's.
    persisted = json.loads((cache / MANIFEST_FILE).read_text())
    assert set(persisted["so_sha256"]) == {one, two}
    first.refresh()
    assert first.hashes[two] == second.hashes[two] and second.hashes[one] == sha256_file(library)
    outsider.refresh()
    assert one not in outsider.hashes and two not in outsider.hashes
    # An entry edited into the file without the key (a candidate's plant) is not adopted.
    planted = "ef" * 32
    persisted["so_sha256"][planted] = "00" * 32
    persisted["so_module"][planted] = "evil"
    persisted["so_mac"][planted] = "11" * 32
    (cache / MANIFEST_FILE).write_text(json.dumps(persisted))
    second.refresh()
    assert planted not in second.hashes


def test_a_killed_parent_is_no_longer_an_owner(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    alive = CacheManifest(cache)
    assert owner_alive(cache / OWNERS_DIR, alive.owner)
    script = (
        "import sys, time; from pathlib import Path\n"
        "from engine.bench.cache_manifest import CacheManifest\n"
        "m = CacheManifest(Path(sys.argv[1])); print(m.owner, flush=True); time.sleep(120)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(cache)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        owner = child.stdout.readline().strip()
        assert owner_alive(cache / OWNERS_DIR, owner)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert not owner_alive(cache / OWNERS_DIR, owner)
    assert not owner_alive(cache / OWNERS_DIR, "not-an-owner")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_processes_building_one_extension_do_not_flag_each_other(tmp_path: Path) -> None:
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    key = secrets.token_hex(32)
    peers = []
    for name in ("a", "b"):
        out, err = (tmp_path / f"{name}.out").open("w"), (tmp_path / f"{name}.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.batch.cache_peer", str(cache), str(barrier), name, "2"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(key + "\n")
        proc.stdin.close()
        peers.append((name, proc))
    rows = []
    try:
        for name, proc in peers:
            assert proc.wait(timeout=400) == 0, (tmp_path / f"{name}.err").read_text()[-3000:]
            text = (tmp_path / f"{name}.out").read_text()
            rows += [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    finally:
        for _, proc in peers:
            if proc.poll() is None:
                proc.kill()
    first = [r for r in rows if r["round"] == 0]
    again = [r for r in rows if r["round"] == 1]
    assert len(first) == len(again) == 2, rows
    for row in rows:
        assert row["correct"], row
        assert "cache_tampered" not in row["flags"], row
    # Round 0, started together: one built the shared copy; the other met the build before
    # its parent had heard of it and built a private copy instead of deleting it.
    assert sorted(r["private"] for r in first) == [False, True], first
    assert all(r["built"] for r in first), first
    # Round 1: both parents adopted the recorded build; both load it without building.
    assert not any(r["built"] for r in again), again
    (library,) = (cache / "ext").glob("*/*.so")
    assert (
        sha256_file(library)
        in json.loads((cache / MANIFEST_FILE).read_text())["so_sha256"].values()
    )
