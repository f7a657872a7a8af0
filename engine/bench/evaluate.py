"""The benchmarker's public entry point: `evaluate(reference_src, candidate_src,
config) -> EvalResult`. Everything candidate-related happens in a sandboxed
worker; this side only writes the request, waits, and turns how the worker
ended into a verdict.

A `Benchmarker` may be called from several threads at once (a `--parallel` search): each
evaluation in flight gets a warm sandbox of its own (one is kept, more are started on
demand), so compiling and correctness run side by side, while timing phases take turns on
the device lease (lease.py), shared with every other process using the same cache dir."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from engine.bench import static_checks
from engine.bench.cache_manifest import CacheManifest
from engine.bench.config import EvalConfig
from engine.bench.deadlines import PHASE_TITLES, timeout_error
from engine.bench.lease import LEASE_DIR_NAME, DeviceLeases
from engine.bench.memory_guard import gib
from engine.bench.outcome import WorkerOutcome
from engine.bench.post_mortem import (
    crash_location,
    phase_after,
    reached_run,
    read_checkpoint,
    side_running,
    verdict_without_result,
)
from engine.bench.result import EvalResult
from engine.bench.sandbox import HarnessError, Sandbox
from engine.bench.signed_files import (
    result_mac,
)

LOG_TAIL_CHARS = 16_000
# Static findings that mean the candidate can reach the harness's own objects in memory, so
# the numbers it reports about itself can't be trusted (the correctness checks still stand).
HARNESS_ACCESS_FLAGS = ("imports_harness", "reads_harness_files")
# A run-phase hang inside the reference is the reference's own only if the deadline was at
# most this many of its calls as measured before the candidate was loaded.
REFERENCE_HANG_CALLS = 3.0


def default_cache_dir() -> Path:
    """Where compiled extensions are kept, keyed by content hash."""
    root = os.environ.get("STARK_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stark"
    )
    return Path(root)


def read_tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    """The last `limit` characters of a possibly huge file, with a marker if cut."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            if size > limit:
                fh.seek(size - limit)
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    if size > limit:
        return f"[... {size - limit} earlier bytes of output truncated ...]\n" + data
    return data


class Benchmarker:
    """Evaluates candidates through warm sandboxes, safe to call from several threads.

    One sandbox (`self.sandbox`) serves evaluations one after another; a concurrent call
    starts another (its fork server costs one torch import, ~1.5 s here) and keeps it for
    later. Timing phases hold the device lease of `lease_dir` (default: the cache dir's
    `leases/`), so concurrent evaluations, here or in other processes, never time at once."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        work_root: Path | None = None,
        lease_dir: Path | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.work_root = Path(work_root) if work_root else None
        self.leases = DeviceLeases(
            Path(lease_dir) if lease_dir else self.cache_dir / LEASE_DIR_NAME
        )
        self.sandbox = Sandbox(self.leases)
        self._sandboxes = [self.sandbox]
        self._idle = [self.sandbox]
        self._pool_lock = threading.Lock()
        # The manifest's in-memory tables are shared by every evaluation in flight.
        self._manifest_lock = threading.Lock()
        self.cache_manifest = CacheManifest(self.cache_dir)

    def warm_up(self, sandboxes: int = 1) -> None:
        """Start `sandboxes` fork servers now (one per evaluation meant to run at once), so
        no evaluation pays the import cost."""
        self.sandbox.warm_up()
        for _ in range(sandboxes - 1):
            with self._pool_lock:
                sandbox = Sandbox(self.leases)
                self._sandboxes.append(sandbox)
                self._idle.insert(0, sandbox)  # the first one stays the one used alone
            sandbox.warm_up()

    def close(self) -> None:
        with self._pool_lock:
            sandboxes = list(self._sandboxes)
        for sandbox in sandboxes:
            sandbox.close()

    def _checkout(self) -> Sandbox:
        """An idle sandbox (the one last returned), or a new one."""
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
            sandbox = Sandbox(self.leases)
            self._sandboxes.append(sandbox)
            return sandbox

    def _checkin(self, sandbox: Sandbox) -> None:
        with self._pool_lock:
            self._idle.append(sandbox)

    def __enter__(self) -> Benchmarker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def evaluate(
        self,
        reference_src: str,
        candidate_src: str,
        config: EvalConfig | None = None,
    ) -> EvalResult:
        config = config or EvalConfig()
        start = time.monotonic()
        if self.work_root:
            self.work_root.mkdir(parents=True, exist_ok=True)
        eval_dir = Path(tempfile.mkdtemp(prefix="stark-eval-", dir=self.work_root))
        try:
            result = self._evaluate_in(eval_dir, reference_src, candidate_src, config)
        finally:
            if not config.keep_workdir:
                shutil.rmtree(eval_dir, ignore_errors=True)
        result.total_s = time.monotonic() - start
        if result.compile_s is not None and result.kernel_s is not None:
            result.harness_overhead_s = max(
                0.0, result.total_s - result.compile_s - result.kernel_s
            )
        return result

    def _evaluate_in(
        self, eval_dir: Path, reference_src: str, candidate_src: str, config: EvalConfig
    ) -> EvalResult:
        nonce = secrets.token_hex(16)
        (eval_dir / "reference.py").write_text(reference_src)
        (eval_dir / "candidate.py").write_text(candidate_src)
        request = {
            "reference_path": str(eval_dir / "reference.py"),
            "candidate_path": str(eval_dir / "candidate.py"),
            "result_path": str(eval_dir / "result.json"),
            "cache_dir": str(self.cache_dir),
            "nonce": nonce,
            "config": config.to_dict(),
        }
        (eval_dir / "request.json").write_text(json.dumps(request))
        with self._manifest_lock:
            cache_token = self.cache_manifest.guard(eval_dir)
        static_flags = static_checks.scan(candidate_src)
        outcome_dump_offset: int | None = None
        outcome_phase_s: dict[str, float] | None = None
        lease_notes: list[str] = []
        sandbox = self._checkout()
        try:
            outcome = sandbox.run(
                eval_dir, config.compile_timeout_s, config.run_timeout_s, nonce, config
            )
        except HarnessError as exc:
            result = EvalResult(error=f"harness error: {exc}", stage="harness")
        else:
            outcome_dump_offset, outcome_phase_s = outcome.dump_offset, outcome.phase_s
            result = self._verdict(eval_dir, outcome, nonce, config)
            lease_notes = apply_lease(result, outcome)
        finally:
            self._checkin(sandbox)
        result.candidate_sha256 = hashlib.sha256(candidate_src.encode()).hexdigest()
        with self._manifest_lock:
            cache_problems = self.cache_manifest.settle(eval_dir, cache_token)
        if cache_problems:
            result.add_flag("cache_tampered")
            notes = "\n".join(f"[stark] {line}" for line in cache_problems)
            result.log = (result.log + "\n" + notes).strip()
        for flag in static_flags:
            result.add_flag(flag)
        reached_harness = any(flag in HARNESS_ACCESS_FLAGS for flag in static_flags)
        # The worker flags untrusted_timing itself when a candidate thread outlived timing.
        if (reached_harness or "untrusted_timing" in result.flags) and (
            result.speedup is not None or result.paired_speedup is not None
        ):
            result.speedup = result.paired_speedup = None
            result.add_flag("untrusted_timing")
        if (
            result.correct
            and result.speedup is not None
            and result.speedup > config.excessive_speedup
        ):
            result.add_flag("excessive_speedup")
        log = read_tail(eval_dir / "log.txt")
        if outcome_phase_s:
            spans = ", ".join(f"{phase} {span:.2f}s" for phase, span in outcome_phase_s.items())
            log = (log.rstrip("\n") + "\n" if log else "") + f"[stark] phases: {spans}"
        for line in lease_notes:
            log = (log.rstrip("\n") + "\n" if log else "") + f"[stark] {line}"
        if result.error_location is None and result.stage in ("crash", "timeout"):
            dump = log
            if outcome_dump_offset is not None:
                dump = read_from(eval_dir / "log.txt", outcome_dump_offset)
            result.error_location = crash_location(dump, eval_dir / "candidate.py")
        result.log = (result.log + "\n" + log).strip() if result.log else log
        if len(result.log) > LOG_TAIL_CHARS * 2:
            result.log = "[... truncated ...]\n" + result.log[-LOG_TAIL_CHARS * 2 :]
        return result

    @staticmethod
    def _verdict(
        eval_dir: Path, outcome: WorkerOutcome, nonce: str, config: EvalConfig
    ) -> EvalResult:
        result_path = eval_dir / "result.json"
        if outcome.timed_out_phase is None and outcome.memory is None and result_path.exists():
            try:
                data = json.loads(result_path.read_text())
            except (OSError, ValueError) as exc:
                return EvalResult(error=f"worker wrote an unreadable result: {exc}", stage="crash")
            verdict = data.get("result") if isinstance(data, dict) else None
            mac = data.get("mac") if isinstance(data, dict) else None
            if not (
                isinstance(verdict, dict)
                and isinstance(mac, str)
                and hmac.compare_digest(mac, result_mac(nonce, verdict))
            ):
                return EvalResult(
                    compiled=reached_run(eval_dir, nonce),
                    error="result file was not written by the harness (bad signature)",
                    stage="crash",
                    flags=["forged_result"],
                )
            result = EvalResult.from_dict(verdict)
            result.speedup = trusted_speedup(result)
            return result
        compiled = reached_run(eval_dir, nonce) or phase_after(outcome.last_phase, "compile")
        checkpoint = read_checkpoint(eval_dir, nonce)
        if outcome.last_phase == "profile" and checkpoint is not None:
            name, kept = checkpoint
            if name == "checked":
                return profile_skipped(kept, outcome, config)
        result = verdict_without_result(outcome, config, compiled, checkpoint)
        if (
            outcome.timed_out_phase in ("run", "timing", "checks")
            and outcome.dump_offset is not None
        ):
            running = side_running(
                read_from(eval_dir / "log.txt", outcome.dump_offset),
                eval_dir / "reference.py",
                eval_dir / "candidate.py",
            )
            if running == "reference":
                blame_reference_hang(result, outcome)
        return result


def apply_lease(result: EvalResult, outcome: WorkerOutcome) -> list[str]:
    """The lease facts only this side saw: the wait (the worker's own figure, if any, is
    replaced) and a timing that started without the grant, whose speedup is withheld.
    Returns the log lines to add."""
    result.lease_wait_s = outcome.lease_wait_s
    notes = [outcome.lease_note] if outcome.lease_note else []
    if outcome.lease_bypassed:
        result.add_flag("lease_bypassed")
        result.add_flag("untrusted_timing")  # timed beside other timings: not a fair figure
        notes.append("timing started without the device lease; speedup withheld")
    return notes


def blame_reference_hang(result: EvalResult, outcome: WorkerOutcome) -> None:
    """The reference's code was innermost when a run-phase deadline passed. The candidate was
    loaded by then and may have changed what the reference calls (rebound `torch.relu` to a
    loop compiled under the reference's file name), so the hang is the reference's only when
    the deadline was no more than a few of its calls as measured before the candidate loaded;
    otherwise it is the candidate's timeout."""
    call_s = outcome.plan.call_s if outcome.plan is not None else None
    limit_s = outcome.deadline_s or 0.0
    phase_title = PHASE_TITLES[outcome.last_phase]
    if call_s is not None and call_s > 0 and limit_s > REFERENCE_HANG_CALLS * call_s:
        result.stage = "timeout"
        result.error = (
            f"the reference hung after the candidate was loaded, far beyond its measured "
            f"~{call_s:.2g} s per call (the candidate may have changed what the reference "
            f"calls); {phase_title} deadline of {limit_s:.3g}s passed; process group killed"
        )
        return
    result.stage = "reference"
    result.error = (
        f"the reference was running when the {phase_title} deadline passed ({result.error}); "
        "not the candidate's fault"
    )


def trusted_speedup(result: EvalResult) -> float | None:
    """The speedup, recomputed here from the timing statistics: the worker's own `speedup`
    field is one assignment away from a candidate that reaches the harness in memory. With
    `side_stream_suspected`, the candidate's time is the host time around a device-wide sync
    (never less than what its events measured)."""
    if result.ref_ms is None or result.new_ms is None:
        return None
    new_ms = result.new_ms.median
    if "side_stream_suspected" in result.flags and result.host_ms is not None:
        new_ms = max(new_ms, result.host_ms.median)
    ref_ms = result.ref_ms.median
    if not (math.isfinite(ref_ms) and math.isfinite(new_ms)) or ref_ms <= 0 or new_ms < 0:
        return None
    return ref_ms / new_ms if new_ms > 0 else math.inf


def read_from(path: Path, offset: int, limit: int = LOG_TAIL_CHARS * 4) -> str:
    """What was appended to `path` after `offset` (at most `limit` characters)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def profile_skipped(checked: EvalResult, outcome: WorkerOutcome, config: EvalConfig) -> EvalResult:
    """The profiler is advisory: whatever happened to it, the verdict measured before it
    (every check passed) stands, with a flag and a note saying why there is no profile."""
    if outcome.timed_out_phase == "profile":
        why = timeout_error("profile", outcome.deadline_s or 0.0, config, outcome.plan)
    elif outcome.memory is not None:
        why = (
            f"profiling exceeded the memory limit of {gib(outcome.memory.limit_bytes)} resident; "
            "the profile was skipped"
        )
    else:
        ended = verdict_without_result(outcome, config, True)
        why = f"profiling ended the worker ({ended.error}); the profile was skipped"
    result = checked
    result.profile = None
    result.add_flag("profile_skipped")
    result.log = (result.log + "\n" if result.log else "") + f"[stark] {why}"
    result.speedup = trusted_speedup(result)
    return result


_default_benchmarker: Benchmarker | None = None


def evaluate(
    reference_src: str, candidate_src: str, config: EvalConfig | None = None
) -> EvalResult:
    """Evaluate with a process-wide default Benchmarker (its fork server is reused)."""
    global _default_benchmarker
    if _default_benchmarker is None:
        _default_benchmarker = Benchmarker()
    return _default_benchmarker.evaluate(reference_src, candidate_src, config)
