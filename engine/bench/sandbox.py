"""Runs one evaluation in an isolated, killable process and reports how it ended.

The parent never imports the candidate, and never initialises CUDA. A warm fork
server (see `forkserver.py`) forks a worker per evaluation; each worker leads its
own process group, so a timeout kills it together with ninja, nvcc or cc1plus.
Compile and run phases have separate deadlines: the worker writes the file
`phase` ("compile", "warmup", then "run") and the deadline in force follows it.
"warmup" is the candidate's first, unchecked call: JIT compilation on first use
(torch.compile, Triton) runs there, under the compile deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
SERVER_START_TIMEOUT_S = 120.0
POLL_S = 0.01


_json_dumps = json.dumps  # bound before any candidate could patch it (see result_mac)


def result_mac(nonce: str, result: dict[str, object]) -> str:
    """HMAC of a worker's verdict under the per-evaluation nonce.

    result.json carries this MAC, never the nonce itself: a candidate thread that reads the
    file after the worker wrote it learns nothing that lets it sign an altered verdict."""
    body = _json_dumps(result, sort_keys=True).encode()
    return hmac.new(nonce.encode(), body, hashlib.sha256).hexdigest()


class HarnessError(RuntimeError):
    """The harness itself (not the candidate) could not run an evaluation."""


@dataclass(slots=True)
class WorkerOutcome:
    """How the worker process ended, as seen from outside it."""

    wait_status: int | None  # raw status from waitpid; None if it was never reaped
    timed_out_phase: str | None  # "compile" | "warmup" | "run" when we killed it for time
    last_phase: str  # the last phase the worker reported
    wall_s: float
    compile_s: float | None  # time spent before the worker entered the run phase

    @property
    def signal(self) -> int | None:
        if self.wait_status is not None and os.WIFSIGNALED(self.wait_status):
            return os.WTERMSIG(self.wait_status)
        return None

    @property
    def exit_code(self) -> int | None:
        if self.wait_status is not None and os.WIFEXITED(self.wait_status):
            return os.WEXITSTATUS(self.wait_status)
        return None


def read_phase(eval_dir: Path) -> str:
    """The phase word ("compile", "run"); the worker appends a token after "run"."""
    words = read_phase_words(eval_dir)
    return words[0] if words else "start"


def read_phase_words(eval_dir: Path) -> list[str]:
    try:
        return (eval_dir / "phase").read_text().split()
    except OSError:
        return []


def run_phase_token(nonce: str, phase: str = "run") -> str:
    """Written by the worker after "warmup"/"run": proves the *worker* got there, since a
    candidate can write the phase file too (it would only shorten its own deadline)."""
    return result_mac(nonce, {"phase": phase})


class Sandbox:
    """Owns one fork server and serialises evaluations through it."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._lock = threading.Lock()
        self.server_import_s: float | None = None
        atexit.register(self.close)

    # -- server lifecycle -------------------------------------------------
    def _start_server(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.bench.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        self._proc = proc
        self._buf = b""
        hello = self._read_message(time.monotonic() + SERVER_START_TIMEOUT_S)
        if not hello or not hello.get("ready"):
            self.close()
            raise HarnessError("benchmark fork server failed to start")
        self.server_import_s = float(hello.get("import_s", 0.0))
        return proc

    def _server(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self.close()
            return self._start_server()
        return self._proc

    def warm_up(self) -> None:
        """Start the fork server now, so the first evaluation pays no import cost."""
        with self._lock:
            self._server()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        for stream in (proc.stdout,):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]

    # -- protocol -----------------------------------------------------------
    def _read_message(self, deadline: float) -> dict[str, object] | None:
        """Next JSON line from the server, or None at the deadline. Raises on EOF."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise HarnessError("benchmark fork server exited unexpectedly")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _send(self, obj: dict[str, object]) -> None:
        proc = self._server()
        assert proc.stdin is not None
        try:
            proc.stdin.write((json.dumps(obj) + "\n").encode())
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self.close()
            raise HarnessError(f"benchmark fork server is gone: {exc}") from exc

    # -- one evaluation -------------------------------------------------------
    def run(self, eval_dir: Path, compile_timeout_s: float, run_timeout_s: float) -> WorkerOutcome:
        """Run the worker on `eval_dir` and wait for it under the phase deadlines."""
        with self._lock:
            return self._run_locked(eval_dir, compile_timeout_s, run_timeout_s)

    def _run_locked(
        self, eval_dir: Path, compile_timeout_s: float, run_timeout_s: float
    ) -> WorkerOutcome:
        request_id = uuid.uuid4().hex
        start = time.monotonic()
        self._send({"id": request_id, "dir": str(eval_dir)})
        pid: int | None = None
        phase = "start"
        run_started: float | None = None
        deadline = start + compile_timeout_s + SERVER_START_TIMEOUT_S
        timed_out: str | None = None
        while True:
            try:
                message = self._read_message(time.monotonic() + POLL_S)
            except HarnessError:
                self.close()
                return WorkerOutcome(None, None, phase, time.monotonic() - start, None)
            now = time.monotonic()
            if message is not None and message.get("id") == request_id:
                if "status" in message:
                    compile_s = (run_started or now) - start
                    return WorkerOutcome(
                        int(message["status"]),
                        timed_out,
                        read_phase(eval_dir),
                        now - start,
                        compile_s,
                    )
                if pid is None and "pid" in message:
                    pid = int(message["pid"])  # type: ignore[arg-type]
                    deadline = now + compile_timeout_s
            if pid is None:
                if now > deadline:
                    self.close()
                    raise HarnessError("benchmark fork server did not start a worker")
                continue
            new_phase = read_phase(eval_dir)
            if new_phase != phase and timed_out is None:
                phase = new_phase
                if phase == "warmup":
                    deadline = now + compile_timeout_s
                elif phase == "run" and run_started is None:
                    run_started = now
                    deadline = now + run_timeout_s
            if timed_out is None and now > deadline:
                timed_out = phase if phase in ("warmup", "run") else "compile"
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                # The server reaps the worker and reports its status; keep waiting for it.
                deadline = now + 30.0
            elif timed_out is not None and now > deadline:
                self.close()
                return WorkerOutcome(None, timed_out, phase, now - start, None)
