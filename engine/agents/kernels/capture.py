"""Capture a reference's graph with torch.fx, in a child process (`capture_worker`).

The reference's constructor and get_inputs() are arbitrary code, so they run in a child of
their own session: a hang is killed with its whole process group when the timeout passes,
and a crash, a non-zero exit or an answer that is not JSON becomes a `CaptureFailure`
saying which, never an exception in the agent. Results (failures too: a reference that hung
once would hang again) are cached per process by sha256 of (device, source), so one search
captures each reference once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from engine.agents.kernels.ir import CapturedGraph, CaptureFailure

WORKER_MODULE = "engine.agents.kernels.capture_worker"
STDERR_TAIL = 2000  # characters of the child's stderr kept for a crash's reason
_ROOT = str(Path(__file__).resolve().parents[3])  # the directory holding the engine package
_CACHE: dict[str, CapturedGraph | CaptureFailure] = {}


def capture_reference(
    source: str, device: str, timeout_s: float = 120.0
) -> CapturedGraph | CaptureFailure:
    """The graph of the reference file `source` on `device` ("cpu" or "cuda"), cached."""
    device = "cuda" if device.startswith("cuda") else "cpu"
    key = hashlib.sha256(f"{device}\0{source}".encode()).hexdigest()
    if key not in _CACHE:
        _CACHE[key] = _run_worker(source, device, timeout_s)
    return _CACHE[key]


def clear_capture_cache() -> None:
    _CACHE.clear()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # shape propagation needs no thread pool on a shared machine
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    return env


def _run_worker(source: str, device: str, timeout_s: float) -> CapturedGraph | CaptureFailure:
    request = json.dumps({"source": source, "device": device}).encode()
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_child_env(),
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(request, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return CaptureFailure(f"the capture did not finish within {timeout_s:g} s")
        finally:
            _kill_group(proc)  # anything the reference left running in the group
        stderr.seek(0)
        tail = stderr.read().decode(errors="replace")[-STDERR_TAIL:]
    return _read_answer(proc.returncode, out, tail)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _last_line(text: str) -> str:
    """The child's last stderr line, as a parenthesised tail for a reason."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f" ({lines[-1]})" if lines else ""


def _read_answer(returncode: int, out: bytes, stderr_tail: str) -> CapturedGraph | CaptureFailure:
    if returncode < 0:
        try:
            name = f" ({signal.Signals(-returncode).name})"
        except ValueError:
            name = ""
        return CaptureFailure(
            f"the capture worker died of signal {-returncode}{name}{_last_line(stderr_tail)}"
        )
    if returncode != 0:
        return CaptureFailure(
            f"the capture worker exited with status {returncode}{_last_line(stderr_tail)}"
        )
    if not out.strip():
        return CaptureFailure(
            f"the capture worker exited without an answer{_last_line(stderr_tail)}"
        )
    try:
        answer = json.loads(out)
    except ValueError:
        shown = out[:200].decode(errors="replace")
        return CaptureFailure(f"the capture worker's answer is not JSON: {shown!r}")
    if not isinstance(answer, dict):
        return CaptureFailure(f"the capture worker's answer is not a JSON object: {answer!r:.200}")
    if "failure" in answer:
        return CaptureFailure(str(answer["failure"]))
    try:
        return CapturedGraph.from_json(answer)
    except (KeyError, TypeError, ValueError) as exc:
        return CaptureFailure(
            f"the capture worker's graph is malformed: {type(exc).__name__}: {exc}"
        )
