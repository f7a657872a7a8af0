"""The benchmarker's public entry point: `evaluate(reference_src, candidate_src,
config) -> EvalResult`. Everything candidate-related happens in a sandboxed
worker; this side only writes the request, waits, and turns how the worker
ended into a verdict."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
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
from engine.bench.deadlines import PHASE_ORDER, PHASE_TITLES, timeout_error
from engine.bench.memory_guard import gib
from engine.bench.result import ErrorLocation, EvalResult
from engine.bench.sandbox import (
    CACHE_BUILDS_FILE,
    CACHE_DIR_HASH_CHARS,
    CACHE_GUARD_FILE,
    HarnessError,
    Sandbox,
    WorkerOutcome,
    authentic_phase,
    read_phase_words,
    result_mac,
    sha256_file,
)

LOG_TAIL_CHARS = 16_000
# Static findings that mean the candidate can reach the harness's own objects in memory, so
# the numbers it reports about itself can't be trusted (the correctness checks still stand).
HARNESS_ACCESS_FLAGS = ("imports_harness", "reads_harness_files")
CHECKPOINT_FILE = "checkpoint.json"  # see worker.Evaluation.checkpoint
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
MANIFEST_FILE = "manifest.json"
_KEY = re.compile(r"[0-9a-f]{64}")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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


class CacheManifest:
    """The parent's record of which compiled extension (.so) each cache key must contain.

    Workers run candidates as the same user, so a candidate can overwrite a cached .so that a
    later honest candidate would load. The parent hands the expected hashes to each worker
    (which rebuilds anything that does not match), learns new builds from the worker's signed
    report, and after each evaluation notices a known .so that changed under it (a cheap
    `stat` first, a hash only when that changed). The in-memory copy is authoritative for
    this Benchmarker's lifetime; manifest.json only carries it to the next process.

    Residual risks (same uid, so not closable from here): a candidate can edit manifest.json
    between two processes; it can swap its OWN build's .so in the instant between link and
    hash, or take the report token from its worker's memory. Two Benchmarkers sharing one
    cache dir don't know each other's builds: each rebuilds (and flags) the other's."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.path = cache_dir / MANIFEST_FILE
        self.hashes: dict[str, str] = {}  # key -> sha256 of the .so
        self.modules: dict[str, str] = {}  # key -> module name (the .so's file name)
        self._load()
        self._seen = {key: _signature(self.library(key)) for key in self.hashes}

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

    def save(self) -> None:
        """Atomically: a reader never sees half a manifest."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{MANIFEST_FILE}.{os.getpid()}.tmp")
        data = {"version": 1, "so_sha256": self.hashes, "so_module": self.modules}
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.path)

    def guard(self, eval_dir: Path) -> str:
        """Write the expected hashes for the worker; returns the token its report is signed
        with (the worker deletes the file before the candidate is imported)."""
        token = secrets.token_hex(16)
        guard = {"expected": self.hashes, "token": token}
        (eval_dir / CACHE_GUARD_FILE).write_text(json.dumps(guard))
        return token

    def settle(self, eval_dir: Path, token: str) -> list[str]:
        """After an evaluation: learn its builds, then audit the known ones. Returns lines
        explaining any tampering found (empty if none)."""
        problems = self._absorb(eval_dir, token)
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


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """Changes whenever the file's content can have (ctime can't be set back by a user)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Benchmarker:
    """Evaluates candidates one after another through one warm sandbox."""

    def __init__(self, cache_dir: Path | None = None, work_root: Path | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.work_root = Path(work_root) if work_root else None
        self.sandbox = Sandbox()
        self.cache_manifest = CacheManifest(self.cache_dir)

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
        cache_token = self.cache_manifest.guard(eval_dir)
        static_flags = static_checks.scan(candidate_src)
        outcome_dump_offset: int | None = None
        outcome_phase_s: dict[str, float] | None = None
        try:
            outcome = self.sandbox.run(
                eval_dir, config.compile_timeout_s, config.run_timeout_s, nonce, config
            )
        except HarnessError as exc:
            result = EvalResult(error=f"harness error: {exc}", stage="harness")
        else:
            outcome_dump_offset, outcome_phase_s = outcome.dump_offset, outcome.phase_s
            result = self._verdict(eval_dir, outcome, nonce, config)
        result.candidate_sha256 = hashlib.sha256(candidate_src.encode()).hexdigest()
        cache_problems = self.cache_manifest.settle(eval_dir, cache_token)
        if cache_problems:
            result.add_flag("cache_tampered")
            notes = "\n".join(f"[stark] {line}" for line in cache_problems)
            result.log = (result.log + "\n" + notes).strip()
        for flag in static_flags:
            result.add_flag(flag)
        if (
            any(flag in HARNESS_ACCESS_FLAGS for flag in static_flags)
            and result.speedup is not None
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
        compiled = reached_run(eval_dir, nonce) or _after(outcome.last_phase, "compile")
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
                result.stage = "reference"
                result.error = (
                    f"the reference was running when the {PHASE_TITLES[outcome.last_phase]} "
                    f"deadline passed ({result.error}); not the candidate's fault"
                )
        return result


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


def _after(phase: str, than: str) -> bool:
    return phase in PHASE_ORDER and PHASE_ORDER.index(phase) > PHASE_ORDER.index(than)


def reached_run(eval_dir: Path, nonce: str) -> bool:
    """Did the worker itself (not a candidate writing the phase file) finish building the
    candidate, i.e. reach the warm-up or a later phase?"""
    phase = authentic_phase(read_phase_words(eval_dir), nonce)
    return phase is not None and _after(phase, "compile")


def read_from(path: Path, offset: int, limit: int = LOG_TAIL_CHARS * 4) -> str:
    """What was appended to `path` after `offset` (at most `limit` characters)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


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
    compiled = _after(outcome.last_phase, "compile") if compiled is None else compiled
    where = "while running the candidate" if compiled else "while building/importing the candidate"
    kept = checkpoint[1] if checkpoint is not None else None
    if outcome.memory is not None:
        stage, error = memory_error(outcome)
    elif outcome.timed_out_phase is not None:
        phase = outcome.timed_out_phase
        stage = "reference" if phase in ("start", "reference") else "timeout"
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


_default_benchmarker: Benchmarker | None = None


def evaluate(
    reference_src: str, candidate_src: str, config: EvalConfig | None = None
) -> EvalResult:
    """Evaluate with a process-wide default Benchmarker (its fork server is reused)."""
    global _default_benchmarker
    if _default_benchmarker is None:
        _default_benchmarker = Benchmarker()
    return _default_benchmarker.evaluate(reference_src, candidate_src, config)
