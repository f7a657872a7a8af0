"""A worker that left no result: how it ended, where the candidate was when it did, and
what its last signed checkpoint had measured, as one verdict."""

from __future__ import annotations

import hmac
import json
import re
import signal
from pathlib import Path

from engine.bench.config import EvalConfig
from engine.bench.deadlines import LEASE_PHASE, PHASE_ORDER, PHASE_TITLES, timeout_error
from engine.bench.memory_guard import gib
from engine.bench.outcome import WorkerOutcome
from engine.bench.result import ErrorLocation, EvalResult
from engine.bench.signed_files import (
    CHECKPOINT_FILE,
    authentic_phase,
    read_phase_words,
    result_mac,
)

# What a checkpoint keeps when the worker is killed later: what it had measured by then.
MEASURED_FIELDS = (
    "trials_passed",
    "correctness_trials",
    "max_abs_err",
    "mean_abs_err",
    "ref_ms",
    "new_ms",
    "host_ms",
    "compile_s",
    "device",
    "threads",
)


def phase_after(phase: str, than: str) -> bool:
    """Is `phase` later than `than` in the worker's phase order?"""
    return phase in PHASE_ORDER and PHASE_ORDER.index(phase) > PHASE_ORDER.index(than)


def reached_run(eval_dir: Path, nonce: str) -> bool:
    """Did the worker itself (not a candidate writing the phase file) finish building the
    candidate, i.e. reach the warm-up or a later phase?"""
    phase = authentic_phase(read_phase_words(eval_dir), nonce)
    return phase is not None and phase_after(phase, "compile")


def read_checkpoint(eval_dir: Path, nonce: str) -> tuple[str, EvalResult] | None:
    """The worker's last signed partial verdict (see worker.Evaluation.checkpoint)."""
    try:
        data = json.loads((eval_dir / CHECKPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    name, verdict, mac = data.get("checkpoint"), data.get("result"), data.get("mac")
    if not (isinstance(name, str) and isinstance(verdict, dict) and isinstance(mac, str)):
        return None
    if not hmac.compare_digest(mac, result_mac(nonce, {"checkpoint": name, "result": verdict})):
        return None
    try:
        return name, EvalResult.from_dict(verdict)
    except (TypeError, ValueError):
        return None


_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')


def main_thread_frames(dump: str) -> list[tuple[str, int, str]]:
    """(file, line, function) of the worker's main thread, innermost first, from the last
    faulthandler dump in `dump`. The main thread is the one whose stack goes down to the fork
    server, which started the worker."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x[0-9a-f]+)", dump)
    for block in reversed(blocks):
        if "most recent call first" in block and "forkserver.py" in block:
            return [(m.group(1), int(m.group(2)), m.group(3)) for m in _FRAME.finditer(block)]
    return []


def side_running(dump: str, reference_path: Path, candidate_path: Path) -> str | None:
    """ "reference" or "candidate": whose code was innermost on the main thread at the dump
    (None when neither shows). A candidate calling the reference shows as the candidate."""
    frames = main_thread_frames(dump)
    files = {str(reference_path): "reference", str(candidate_path): "candidate"}
    sides = [files[file] for file, _, _ in frames if file in files]
    if not sides:
        return None
    return "candidate" if "candidate" in sides else "reference"


def crash_location(log: str, candidate_path: Path) -> ErrorLocation | None:
    """Where a crashed or hung worker was in the candidate, from the faulthandler dump the
    worker writes on a fatal signal or when the sandbox asks just before a deadline kill:
    the main thread's innermost candidate frame (never a line of the reference)."""
    frames = main_thread_frames(log)
    if not frames:  # no main thread found: the first candidate frame of any dump
        pattern = re.compile(r'File "' + re.escape(str(candidate_path)) + r'", line (\d+) in (\S+)')
        match = pattern.search(log[log.find("most recent call first") :]) if log else None
        return ErrorLocation(line=int(match.group(1)), function=match.group(2)) if match else None
    for file, line, function in frames:
        if file == str(candidate_path):
            return ErrorLocation(line=line, function=function)
    return None


def verdict_without_result(
    outcome: WorkerOutcome,
    config: EvalConfig,
    compiled: bool | None = None,
    checkpoint: tuple[str, EvalResult] | None = None,
) -> EvalResult:
    """A worker that left no result has not passed; say exactly how it ended, and keep what
    its last signed checkpoint had measured. `compiled` (from `reached_run`) overrides the
    phase word, which a candidate could have written."""
    compiled = phase_after(outcome.last_phase, "compile") if compiled is None else compiled
    where = "while running the candidate" if compiled else "while building/importing the candidate"
    kept = checkpoint[1] if checkpoint is not None else None
    if outcome.memory is not None:
        stage, error = memory_error(outcome)
    elif outcome.timed_out_phase is not None:
        phase = outcome.timed_out_phase
        stage = "reference" if phase in ("start", "reference") else "timeout"
        if phase == LEASE_PHASE:  # other evaluations held the device: the harness's problem
            stage = "harness"
        error = timeout_error(
            phase,
            outcome.deadline_s or 0.0,
            config,
            outcome.plan,
            trials_passed=kept.trials_passed if kept else 0,
            compile_seen=outcome.compile_seen,
        )
    elif outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        detail = {
            "SIGSEGV": "segmentation fault",
            "SIGABRT": "abort",
            "SIGBUS": "bus error",
            "SIGFPE": "floating-point exception",
            "SIGKILL": "killed (out of memory?)",
            "SIGXFSZ": "output exceeded the file size limit",
        }.get(name, "killed by a signal")
        error = f"worker died {where}: {name} ({detail})"
        stage = "crash"
    elif outcome.exit_code is not None:
        error = f"worker exited with status {outcome.exit_code} {where} without reporting a result"
        stage = "crash"
    else:
        error = "harness lost the worker (fork server died)"
        stage = "harness"
    result = EvalResult(compiled=compiled, error=error, stage=stage, compile_s=outcome.compile_s)
    if kept is not None:
        for name in MEASURED_FIELDS:
            if hasattr(kept, name) and getattr(kept, name) is not None:
                setattr(result, name, getattr(kept, name))
        for flag in kept.flags:
            result.add_flag(flag)
    return result


def memory_error(outcome: WorkerOutcome) -> tuple[str, str]:
    """(stage, error) for a worker the memory watchdog killed. Before the candidate was loaded
    only the reference ran, so that is the reference's verdict, never the candidate's."""
    memory = outcome.memory
    assert memory is not None
    limit, peak = gib(memory.limit_bytes), gib(memory.peak_bytes, exact=True)
    if memory.phase in ("start", "reference"):
        return "reference", (
            f"the reference alone exceeded the memory limit of {limit} resident (peak {peak}) "
            "before the candidate was loaded (not the candidate's fault); process group killed "
            "(raise memory_limit_gb)"
        )
    during = PHASE_TITLES.get(memory.phase, memory.phase)
    return "runtime", (
        f"candidate exceeded the memory limit of {limit} resident (peak {peak}, during "
        f"{during}; the reference alone peaked at {gib(memory.reference_peak_bytes, exact=True)}); "
        "process group killed"
    )
