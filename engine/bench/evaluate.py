"""The benchmarker's public entry point: `evaluate(reference_src, candidate_src,
config) -> EvalResult`. Everything candidate-related happens in a sandboxed
worker; this side only writes the request, waits, and turns how the worker
ended into a verdict."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

from engine.bench import static_checks
from engine.bench.config import EvalConfig
from engine.bench.result import ErrorLocation, EvalResult
from engine.bench.sandbox import (
    HarnessError,
    Sandbox,
    WorkerOutcome,
    read_phase_words,
    result_mac,
    run_phase_token,
)

LOG_TAIL_CHARS = 16_000


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
    """Evaluates candidates one after another through one warm sandbox."""

    def __init__(self, cache_dir: Path | None = None, work_root: Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.work_root = Path(work_root) if work_root else None
        self.sandbox = Sandbox()

    def warm_up(self) -> None:
        self.sandbox.warm_up()

    def close(self) -> None:
        self.sandbox.close()

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
        static_flags = static_checks.scan(candidate_src)
        try:
            outcome = self.sandbox.run(eval_dir, config.compile_timeout_s, config.run_timeout_s)
        except HarnessError as exc:
            result = EvalResult(error=f"harness error: {exc}", stage="harness")
        else:
            result = self._verdict(eval_dir, outcome, nonce, config)
        result.candidate_sha256 = hashlib.sha256(candidate_src.encode()).hexdigest()
        for flag in static_flags:
            result.add_flag(flag)
        if (
            result.correct
            and result.speedup is not None
            and result.speedup > config.excessive_speedup
        ):
            result.add_flag("excessive_speedup")
        log = read_tail(eval_dir / "log.txt")
        if result.error_location is None and result.stage in ("crash", "timeout"):
            result.error_location = crash_location(log, eval_dir / "candidate.py")
        result.log = (result.log + "\n" + log).strip() if result.log else log
        if len(result.log) > LOG_TAIL_CHARS * 2:
            result.log = "[... truncated ...]\n" + result.log[-LOG_TAIL_CHARS * 2 :]
        return result

    @staticmethod
    def _verdict(
        eval_dir: Path, outcome: WorkerOutcome, nonce: str, config: EvalConfig
    ) -> EvalResult:
        result_path = eval_dir / "result.json"
        if outcome.timed_out_phase is None and result_path.exists():
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
            return EvalResult.from_dict(verdict)
        return verdict_without_result(outcome, config, reached_run(eval_dir, nonce))


def reached_run(eval_dir: Path, nonce: str) -> bool:
    """Did the worker itself (not a candidate writing the phase file) finish building the
    candidate, i.e. reach the warm-up or run phase?"""
    words = read_phase_words(eval_dir)
    return (
        len(words) == 2
        and words[0] in ("warmup", "run")
        and hmac.compare_digest(words[1], run_phase_token(nonce, words[0]))
    )


def crash_location(log: str, candidate_path: Path) -> ErrorLocation | None:
    """Where a crashed or hung worker was in the candidate, from the faulthandler dump the
    worker writes on a fatal signal or just before its deadline (most recent call first)."""
    pattern = re.compile(r'File "' + re.escape(str(candidate_path)) + r'", line (\d+) in (\S+)')
    match = pattern.search(log[log.find("most recent call first") :]) if log else None
    return ErrorLocation(line=int(match.group(1)), function=match.group(2)) if match else None


def verdict_without_result(
    outcome: WorkerOutcome, config: EvalConfig, compiled: bool | None = None
) -> EvalResult:
    """A worker that left no result has not passed; say exactly how it ended. `compiled`
    (from `reached_run`) overrides the phase word, which a candidate could have written."""
    compiled = outcome.last_phase in ("warmup", "run") if compiled is None else compiled
    where = "while running the candidate" if compiled else "while building/importing the candidate"
    if outcome.timed_out_phase == "compile":
        error = (
            f"compile/import timed out after {config.compile_timeout_s:g}s; process group killed"
        )
        stage = "timeout"
    elif outcome.timed_out_phase == "warmup":
        error = (
            f"first call (JIT compile / warm-up) timed out after {config.compile_timeout_s:g}s; "
            "process group killed"
        )
        stage = "timeout"
    elif outcome.timed_out_phase == "run":
        error = f"run timed out after {config.run_timeout_s:g}s; process group killed"
        stage = "timeout"
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
    return EvalResult(compiled=compiled, error=error, stage=stage, compile_s=outcome.compile_s)


_default_benchmarker: Benchmarker | None = None


def evaluate(
    reference_src: str, candidate_src: str, config: EvalConfig | None = None
) -> EvalResult:
    """Evaluate with a process-wide default Benchmarker (its fork server is reused)."""
    global _default_benchmarker
    if _default_benchmarker is None:
        _default_benchmarker = Benchmarker()
    return _default_benchmarker.evaluate(reference_src, candidate_src, config)
