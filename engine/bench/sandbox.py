"""Runs one evaluation in an isolated, killable process and reports how it ended.

The parent never imports the candidate, and never initialises CUDA. A warm fork
server (see `forkserver.py`) forks a worker per evaluation; each worker leads its
own process group, so a timeout kills it together with ninja, nvcc or cc1plus.
Compile and run phases have separate deadlines: the worker writes the file
`phase` ("compile", "warmup", then "run") and the deadline in force follows it.
"warmup" is the candidate's first, unchecked call: JIT compilation on first use
(torch.compile, Triton) runs there, under the compile deadline.

The candidate can write that file too, so a phase change counts only if it is signed
with the per-evaluation token (`run_phase_token`), moves forward, and happens once; and
one evaluation never outlives compile + warm-up + run deadlines plus a little slack,
whatever the file says. The fork server starts with a scrubbed environment: no API keys
or other secrets reach candidate code.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import hmac
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
SERVER_START_TIMEOUT_S = 120.0
POLL_S = 0.01
# On top of compile + warm-up + run deadlines: reaping, writing the verdict, a slow disk.
WALL_SLACK_S = 30.0
PR_SET_DUMPABLE = 4
PHASE_ORDER = ("start", "compile", "warmup", "run")
SIGNED_PHASES = ("warmup", "run")

# Environment variables whose NAME says they hold a secret never reach the fork server.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.I)
# Names the build and the run need; kept unless the name itself says secret. Everything else
# is also dropped when its VALUE looks like a key (see engine.trace.sanitize.redact).
_ESSENTIAL_NAMES = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TMPDIR", "TERM"}
_ESSENTIAL_PREFIXES = (
    "CC",
    "CXX",
    "CFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "CUDA",
    "NVCC",
    "NVIDIA_",
    "TORCH",
    "TRITON_",
    "LD_",
    "LC_",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "PYTHON",
    "STARK_",
    "XDG_",
    "VIRTUAL_ENV",
    "CONDA",
    "MAX_JOBS",
)


_json_dumps = json.dumps  # bound before any candidate could patch it (see result_mac)


# The compile cache's integrity protocol (see compile_cache.py and evaluate.CacheManifest):
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


def is_secret_variable(name: str, value: str) -> bool:
    """Would this environment variable hand a credential to candidate code?"""
    if _SECRET_NAME.search(name):
        return True
    if name in _ESSENTIAL_NAMES or name.startswith(_ESSENTIAL_PREFIXES):
        return False
    from engine.trace.sanitize import redact  # parent only; keeps the worker's imports lean

    return redact(value, environ={}) != value


def hide_own_environment() -> bool:
    """Make this process non-dumpable if its environment holds a secret; True if it did.

    Any process of the same user, a candidate included, can read /proc/PID/environ of its
    ancestors, and the kernel keeps the initial environment block even after os.environ is
    scrubbed. A non-dumpable process's /proc files belong to root. (Side effects: no core
    dumps, and a debugger or py-spy needs root to attach.)"""
    try:
        with open("/proc/self/environ", "rb") as fh:
            block = fh.read().decode("utf-8", errors="replace").split("\0")
    except OSError:
        return False
    variables = [entry.partition("=") for entry in block if "=" in entry]
    current = list(os.environ.items())
    if not any(is_secret_variable(n, v) for n, _, v in variables) and not any(
        is_secret_variable(n, v) for n, v in current
    ):
        return False
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    return False


def scrubbed_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fork server's environment: the caller's, minus anything that looks secret, plus
    what the harness needs. Candidate code inherits exactly this."""
    source = os.environ if environ is None else environ
    env = {name: value for name, value in source.items() if not is_secret_variable(name, value)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Inductor's compile worker pool leaves threads behind and competes with the timed
    # kernels on small machines; one thread unless the user chose otherwise.
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    return env


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


def authentic_phase(words: list[str], nonce: str) -> str | None:
    """The phase the worker itself announced, or None for anything a candidate could forge.

    "compile" is unsigned (it moves no deadline); "warmup"/"run" need their token."""
    if words == ["compile"]:
        return "compile"
    signed = len(words) == 2 and words[0] in SIGNED_PHASES
    if signed and hmac.compare_digest(words[1], run_phase_token(nonce, words[0])):
        return words[0]
    return None


def wall_limit_s(compile_timeout_s: float, run_timeout_s: float) -> float:
    """The most one evaluation may take once its worker exists, whatever the phase file says."""
    return 2 * compile_timeout_s + run_timeout_s + WALL_SLACK_S


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
        env = scrubbed_environment()
        hide_own_environment()
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
    def run(
        self, eval_dir: Path, compile_timeout_s: float, run_timeout_s: float, nonce: str
    ) -> WorkerOutcome:
        """Run the worker on `eval_dir` and wait for it under the phase deadlines; `nonce` is
        the evaluation's secret, which the worker's phase announcements are signed with."""
        with self._lock:
            return self._run_locked(eval_dir, compile_timeout_s, run_timeout_s, nonce)

    def _run_locked(
        self, eval_dir: Path, compile_timeout_s: float, run_timeout_s: float, nonce: str
    ) -> WorkerOutcome:
        request_id = uuid.uuid4().hex
        start = time.monotonic()
        self._send({"id": request_id, "dir": str(eval_dir)})
        pid: int | None = None
        phase = "start"
        run_started: float | None = None
        deadline = start + compile_timeout_s + SERVER_START_TIMEOUT_S
        hard_deadline = deadline
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
                        int(message["status"]), timed_out, phase, now - start, compile_s
                    )
                if pid is None and "pid" in message:
                    pid = int(message["pid"])  # type: ignore[arg-type]
                    deadline = now + compile_timeout_s
                    hard_deadline = now + wall_limit_s(compile_timeout_s, run_timeout_s)
            if pid is None:
                if now > deadline:
                    self.close()
                    raise HarnessError("benchmark fork server did not start a worker")
                continue
            announced = authentic_phase(read_phase_words(eval_dir), nonce)
            if (
                timed_out is None
                and announced is not None
                and PHASE_ORDER.index(announced) > PHASE_ORDER.index(phase)
            ):
                phase = announced  # forward only, so each phase (and its deadline) starts once
                if phase == "warmup":
                    deadline = now + compile_timeout_s
                elif phase == "run":
                    run_started = now
                    deadline = now + run_timeout_s
            if timed_out is None and (now > deadline or now > hard_deadline):
                timed_out = phase if phase in SIGNED_PHASES else "compile"
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                # The server reaps the worker and reports its status; keep waiting for it.
                deadline = now + 30.0
            elif timed_out is not None and now > deadline:
                self.close()
                return WorkerOutcome(None, timed_out, phase, now - start, None)
