"""Runs one evaluation in an isolated, killable process and reports how it ended.

The parent never imports the candidate, and never initialises CUDA. A warm fork
server (see `forkserver.py`) forks a worker per evaluation; each worker leads its
own process group, so a timeout kills it together with ninja, nvcc or cc1plus.
Each phase has its deadline: the worker writes the file `phase` ("reference",
"compile", "warmup", "run", "timing", "checks", "profile"; see deadlines.py) and the
deadline in force follows it. "warmup" is the candidate's first, unchecked call: JIT
compilation on first use (torch.compile, Triton) runs there, so it gets the run deadline
*since compile work was last seen* (a compiler process in the worker's tree, or the
worker's signed heartbeat saying its main thread is inside dynamo/inductor/triton/
cpp_extension), capped by the compile deadline. The run deadline is sized from the
reference's call time, measured before the candidate loads. The worker's process tree is
also watched for resident memory (memory_guard.py).

The candidate can write that file too, so a phase change counts only if it is signed
with the per-evaluation token (`run_phase_token`), moves forward, and happens once; and
one evaluation never outlives compile + warm-up + run deadlines plus a little slack,
whatever the file says. The fork server starts with a scrubbed environment: no API keys
or other secrets reach candidate code.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from engine.bench.config import EvalConfig
from engine.bench.deadlines import (
    ACTIVITY_PHASES,
    LEASE_PHASE,
    PHASE_ORDER,
    RUN_PHASES,
    PhaseClock,
    plan_run,
    reference_estimate,
)
from engine.bench.environment import hide_own_environment, scrubbed_environment
from engine.bench.lease import DeviceLeases, TimingLease
from engine.bench.memory_guard import RSS_POLL_S, TreeWatch, memory_limit_bytes
from engine.bench.outcome import MemoryExceeded, WorkerOutcome
from engine.bench.signed_files import authentic_phase_info, read_activity, read_phase_words

SERVER_START_TIMEOUT_S = 120.0
POLL_S = 0.01
# On top of compile + warm-up + run deadlines: reaping, writing the verdict, a slow disk.
WALL_SLACK_S = 30.0
DUMP_GRACE_S = 0.3  # between asking the worker for its stacks (SIGUSR1) and the kill
STACK_DUMP_SIGNAL = signal.SIGUSR1


class HarnessError(RuntimeError):
    """The harness itself (not the candidate) could not run an evaluation."""


def wall_limit_s(compile_timeout_s: float, run_timeout_s: float, profile_s: float = 0.0) -> float:
    """The most one evaluation may take once its worker exists, whatever the phase file says:
    the reference, the build and the first call may each take up to the compile deadline."""
    return 3 * compile_timeout_s + run_timeout_s + profile_s + WALL_SLACK_S


class Sandbox:
    """Owns one fork server and serialises evaluations through it. `leases`: where the
    timing phase takes its device lease (lease.py); None: timings never wait."""

    def __init__(self, leases: DeviceLeases | None = None) -> None:
        self.leases = leases
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
        self,
        eval_dir: Path,
        compile_timeout_s: float,
        run_timeout_s: float,
        nonce: str,
        config: EvalConfig | None = None,
    ) -> WorkerOutcome:
        """Run the worker on `eval_dir` and wait for it under the phase deadlines and the
        memory limit; `nonce` is the evaluation's secret, which the worker's phase
        announcements are signed with. `config` sizes the deadlines (its timeouts are
        replaced by the two given here)."""
        base = config.to_dict() if config is not None else {}
        base.update(compile_timeout_s=compile_timeout_s, run_timeout_s=run_timeout_s)
        with self._lock:
            return _Watch(self, eval_dir, nonce, EvalConfig.from_dict(base)).wait()


class _Watch:
    """Waits for one worker: follows its signed phases, restarts the warm-up deadline while
    compile work is seen, sizes the run deadline from the reference's measured call time,
    and kills the worker's group on a deadline or when its tree's resident memory passes the
    limit."""

    def __init__(self, sandbox: Sandbox, eval_dir: Path, nonce: str, config: EvalConfig) -> None:
        self.sandbox, self.eval_dir, self.nonce, self.config = sandbox, eval_dir, nonce, config
        self.clock = PhaseClock(config, plan_run(config, reference_estimate(config, None)))
        self.limit_bytes = memory_limit_bytes(config)
        self.pid: int | None = None
        self.tree: TreeWatch | None = None
        self.worker_started = 0.0
        self.reference_started: float | None = None
        self.reference_peak = 0
        self.last_activity_count = -1
        self.next_rss = 0.0
        self.timed_out: str | None = None
        self.memory: MemoryExceeded | None = None
        self.kill_at: float | None = None
        self.dump_offset: int | None = None
        self.run_started: float | None = None
        self.hard_deadline = 0.0
        self.entered: list[tuple[str, float]] = []  # (phase, when), in order
        self.lease = TimingLease(sandbox.leases, eval_dir, nonce)

    def outcome(self, status: int | None, now: float, start: float) -> WorkerOutcome:
        compile_s = (self.run_started or now) - start if status is not None else None
        return WorkerOutcome(
            wait_status=status,
            timed_out_phase=self.timed_out,
            last_phase=self.clock.phase,
            wall_s=now - start,
            compile_s=compile_s,
            deadline_s=self.clock.limit_s() if self.timed_out else None,
            memory=self.memory,
            plan=self.clock.plan,
            compile_seen=self.clock.compile_seen,
            dump_offset=self.dump_offset,
            phase_s=self.phase_spans(now),
            lease_wait_s=self.lease.wait_s,
            lease_bypassed=self.lease.bypassed,
            lease_note=self.lease.note,
        )

    def phase_spans(self, now: float) -> dict[str, float]:
        """Seconds spent in each signed phase; none when the worker never announced one
        (it died, or a candidate wrote the phase file unsigned)."""
        if not self.entered:
            return {}
        ends = [when for _, when in self.entered[1:]] + [now]
        return {phase: end - when for (phase, when), end in zip(self.entered, ends, strict=True)}

    def wait(self) -> WorkerOutcome:
        try:
            return self._wait()
        finally:
            self.lease.release()  # however the worker ended

    def _wait(self) -> WorkerOutcome:
        sandbox = self.sandbox
        request_id = uuid.uuid4().hex
        start = time.monotonic()
        sandbox._send({"id": request_id, "dir": str(self.eval_dir)})
        deadline = start + self.config.compile_timeout_s + SERVER_START_TIMEOUT_S
        self.hard_deadline = deadline
        reap_deadline: float | None = None
        while True:
            try:
                message = sandbox._read_message(time.monotonic() + POLL_S)
            except HarnessError:
                sandbox.close()
                return self.outcome(None, time.monotonic(), start)
            now = time.monotonic()
            if message is not None and message.get("id") == request_id:
                if "status" in message:
                    return self.outcome(int(message["status"]), now, start)  # type: ignore[arg-type]
                if self.pid is None and "pid" in message:
                    self.pid = int(message["pid"])  # type: ignore[arg-type]
                    self.worker_started = now
                    self.tree = TreeWatch(self.pid)
                    self.clock.enter("start", now)
                    self.hard_deadline = now + self.wall_limit()
            if self.pid is None:
                if now > deadline:
                    sandbox.close()
                    raise HarnessError("benchmark fork server did not start a worker")
                continue
            if reap_deadline is not None:
                if self.kill_at is not None and now >= self.kill_at:
                    self.kill_group()
                if now > reap_deadline:
                    sandbox.close()
                    return self.outcome(None, now, start)
                continue
            self.follow_phase(now)
            if self.clock.phase == LEASE_PHASE:
                self.lease.poll(now)
            if now >= self.next_rss:
                self.next_rss = now + RSS_POLL_S
                if self.check_memory(now):
                    reap_deadline = now + 30.0
                    continue
            if now > self.clock.deadline or now > self.hard_deadline + self.clock.waited(now):
                self.timed_out = self.clock.phase
                self.request_stack_dump()
                self.kill_at = now + DUMP_GRACE_S
                # The server reaps the worker and reports its status; keep waiting for it.
                reap_deadline = now + 30.0

    def wall_limit(self) -> float:
        plan = self.clock.plan
        return wall_limit_s(
            self.config.compile_timeout_s,
            max(plan.run_deadline_s, plan.warmup_base_s),
            plan.profile_deadline_s,
        )

    def follow_phase(self, now: float) -> None:
        """Take a signed, forward move of the phase file; each phase (and its deadline) starts
        once. Sizes the run plan when the reference phase ends."""
        clock = self.clock
        info = authentic_phase_info(read_phase_words(self.eval_dir), self.nonce)
        if info is not None and PHASE_ORDER.index(info[0]) > PHASE_ORDER.index(clock.phase):
            phase, extras = info
            leaving_reference = clock.phase in ("start", "reference")
            if phase == "reference":
                self.reference_started = now
            elif leaving_reference:
                self.size_run(extras, now)
            if phase in RUN_PHASES and self.run_started is None:
                self.run_started = now
            self.follow_lease(phase, extras, now)
            clock.enter(phase, now)
            self.entered.append((phase, now))
        if clock.phase in ACTIVITY_PHASES:
            count = read_activity(self.eval_dir, self.nonce)
            if count is not None and count > self.last_activity_count:
                clock.activity(now)  # the worker saw its main thread inside a compiler
                self.last_activity_count = count

    def follow_lease(self, phase: str, extras: Mapping[str, str], now: float) -> None:
        """The worker asks for the device lease (phase `lease`, with its device); timing
        starts, granted or not (a bypass is flagged); anything after timing releases it."""
        if phase == LEASE_PHASE:
            self.lease.ask(extras.get("device", "cpu"), now)
        elif PHASE_ORDER.index(phase) >= PHASE_ORDER.index("timing"):
            self.lease.timing_started()
            if phase != "timing":
                self.lease.release()

    def size_run(self, extras: Mapping[str, str], now: float) -> None:
        """The reference's call time, as the worker measured it before the candidate existed
        (never more than the span this side saw the reference phase take)."""
        try:
            reported = float(extras.get("call_s", "nan"))
        except ValueError:
            reported = float("nan")
        span = now - (self.reference_started or self.worker_started)
        measured = min(reported, span) if reported == reported and reported >= 0 else None
        self.clock.plan = plan_run(self.config, reference_estimate(self.config, measured))
        # Bounded still: the estimate is at most the reference phase's own span.
        self.hard_deadline = self.worker_started + self.wall_limit()

    def check_memory(self, now: float) -> bool:
        """Kill the group if the tree's resident memory passed the limit; True if it did."""
        assert self.tree is not None and self.pid is not None
        sample = self.tree.sample(now)
        if sample is None:
            return False
        if sample.compiling:
            self.clock.activity(now)
        if self.clock.phase in ("start", "reference"):
            self.reference_peak = max(self.reference_peak, sample.rss_bytes)
        if sample.rss_bytes <= self.limit_bytes:
            return False
        self.kill_group()
        self.memory = MemoryExceeded(
            self.limit_bytes, self.tree.peak_bytes, self.clock.phase, self.reference_peak
        )
        return True

    def request_stack_dump(self) -> None:
        """The worker's faulthandler writes every thread's stack into log.txt on SIGUSR1, so a
        hang's verdict can say where it hung; only text after this offset is believed."""
        assert self.pid is not None
        try:
            self.dump_offset = (self.eval_dir / "log.txt").stat().st_size
        except OSError:
            self.dump_offset = 0
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, STACK_DUMP_SIGNAL)

    def kill_group(self) -> None:
        assert self.pid is not None
        self.kill_at = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
