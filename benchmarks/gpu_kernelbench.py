"""KernelBench problems for the GPU suite: copy them in, run `stark batch`, compare.

KernelBench's files are never committed. `copy_tasks` takes them from a snapshot
(a checkout, or the bare git directory that the search tool's `fetch` leaves)
into a git-ignored folder (`.kb/` by default) that a device run can carry.

The torch.compile baseline is a candidate like any other: the reference file
with a `ModelNew` that subclasses `Model` and compiles its forward, benchmarked
against eager by the same benchmarker, so both baselines are timed identically.
Those sources, the beyond-IQR rule and the geomean come from `engine.search.remeasure`
(what `stark optimize` and `stark batch` use to re-measure their best kernels), so
this suite and the engine count a win the same way.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.artifacts.remeasured import beyond_iqr, geomean
from engine.search.remeasure import (
    COMPILE_BASELINE_SUFFIX,
    COMPILED_REFERENCE_SUFFIX,
    compile_baseline_source,
    compiled_reference_source,
)

__all__ = [
    "COMPILED_REFERENCE_SUFFIX",
    "COMPILE_BASELINE_SUFFIX",
    "compile_baseline_source",
    "compiled_reference_source",
    "geomean",
]

TASKS_FILE = Path(__file__).with_name("kernelbench_tasks.txt")
DEFAULT_KB_DIR = ".kb"
# A problem file "runs unchanged" if it needs nothing beyond torch and these.
ALLOWED_IMPORT_ROOTS = frozenset({"torch", "math", "__future__", "typing"})


def read_task_list(path: Path = TASKS_FILE) -> list[str]:
    """Relative task paths, one a line; '#' starts a comment."""
    tasks = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            tasks.append(line)
    if not tasks:
        raise ValueError(f"{path} lists no KernelBench tasks")
    return tasks


def level_of(task: str) -> str:
    """'level1' for 'KernelBench/level1/19_ReLU.py'."""
    for part in Path(task).parts:
        if part.startswith("level"):
            return part
    return "other"


def _is_bare_git_dir(path: Path) -> bool:
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


def _read_from_snapshot(snapshot: Path, task: str) -> str:
    """The task's text from a checkout, its KernelBench/ folder, or a bare git dir."""
    if _is_bare_git_dir(snapshot):
        proc = subprocess.run(
            ["git", f"--git-dir={snapshot}", "show", f"HEAD:{task}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise FileNotFoundError(f"{task} is not in the git snapshot {snapshot}")
        return proc.stdout
    for candidate in (snapshot / task, snapshot.parent / task):
        if candidate.is_file():
            return candidate.read_text()
    raise FileNotFoundError(f"{task} is not under {snapshot}")


def copy_tasks(snapshot: Path, dest: Path, tasks: list[str]) -> list[Path]:
    """Copy the listed problems to dest/<level>/<file>; all must exist."""
    if not snapshot.exists():
        raise FileNotFoundError(f"KernelBench snapshot {snapshot} does not exist")
    copied = []
    missing = []
    for task in tasks:
        try:
            text = _read_from_snapshot(snapshot, task)
        except FileNotFoundError:
            missing.append(task)
            continue
        target = dest / level_of(task) / Path(task).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        copied.append(target)
    if missing:
        raise FileNotFoundError(f"missing from {snapshot}: {', '.join(missing)}")
    return copied


def local_task_files(dest: Path, tasks: list[str]) -> list[Path]:
    """Where copy_tasks put each task; raises if a copy is missing (carry the folder)."""
    paths = [dest / level_of(t) / Path(t).name for t in tasks]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise FileNotFoundError(
            f"KernelBench copies not found: {', '.join(absent)}; run with --kernelbench "
            "SNAPSHOT first (and carry the folder to the device)"
        )
    return paths


def extra_imports(source: str) -> list[str]:
    """Top-level modules the file imports beyond torch and the small allowed set."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return sorted(found - ALLOWED_IMPORT_ROOTS)


@dataclass(slots=True)
class BatchRun:
    """How one `stark batch` subprocess went."""

    command: list[str]
    returncode: int | None
    seconds: float
    summary: dict[str, Any] | None
    stdout_tail: str = ""
    stderr_tail: str = ""
    error: str | None = None


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last JSON object printed: the whole text, else the last line that parses."""
    text = text.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    start = text.rfind("\n{")
    if start >= 0:
        try:
            value = json.loads(text[start + 1 :])
            return value if isinstance(value, dict) else None
        except ValueError:
            return None
    return None


def run_batch(
    files: list[Path],
    out_dir: Path,
    rounds: int,
    device: str,
    timeout_s: float,
    repo_root: Path,
) -> BatchRun:
    """`stark batch FILES --agent offline --rounds N --device D --out DIR --json
    --no-compile-baseline`."""
    command = [
        sys.executable,
        "-m",
        "engine",
        "batch",
        *[str(f) for f in files],
        "--agent",
        "offline",
        "--rounds",
        str(rounds),
        "--device",
        device,
        "--out",
        str(out_dir),
        "--json",
        # the suite measures torch.compile itself, with its own time budget
        "--no-compile-baseline",
    ]
    env = dict(os.environ)
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # see Suite.bench in gpu_suite.py
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    start = time.monotonic()
    try:
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=repo_root,
            env=env,
            check=False,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        # The batch rewrites summary.json after every task: keep what finished.
        return BatchRun(
            command,
            None,
            time.monotonic() - start,
            newest_summary_file(out_dir),
            _tail(exc.stdout),
            _tail(exc.stderr),
            error=f"stark batch timed out after {timeout_s:g}s (tasks finished so far kept)",
        )
    seconds = time.monotonic() - start
    summary = last_json_object(proc.stdout)
    error = None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        error = f"stark batch exited {proc.returncode}: {last}"
        summary = summary or newest_summary_file(out_dir)
    elif summary is None:
        error = "stark batch printed no JSON summary"
    return BatchRun(
        command, proc.returncode, seconds, summary, _tail(proc.stdout), _tail(proc.stderr), error
    )


def newest_summary_file(out_dir: Path) -> dict[str, Any] | None:
    """The summary.json of the newest batch run under out_dir, if any."""
    found = sorted(out_dir.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _tail(text: str | bytes | None, limit: int = 4000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text[-limit:]


def task_entries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-task dicts of a batch summary, wherever the summary keeps them."""
    for key in ("task_results", "outcomes", "results", "per_task", "tasks"):
        value = summary.get(key)
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            return value
    for value in summary.values():
        is_dicts = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        if is_dicts and any("best_speedup" in v for v in value):
            return value
    return []


def entry_matches(entry: dict[str, Any], path: Path) -> bool:
    names = {str(entry.get(k) or "") for k in ("task", "reference", "name", "path")}
    return any(n and (Path(n).name == path.name or Path(n).stem == path.stem) for n in names)


@dataclass(slots=True)
class Comparison:
    """One evaluation: a baseline (the reference side) against a candidate, both timed the
    same way in the same run. Times are medians and IQRs in milliseconds."""

    correct: bool
    speedup: float | None = None
    baseline_ms: float | None = None
    baseline_iqr_ms: float | None = None
    candidate_ms: float | None = None
    candidate_iqr_ms: float | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> Comparison | None:
        return None if value is None else cls(**value)

    @property
    def beyond_noise(self) -> bool:
        """Faster, with the two sides' interquartile ranges apart: a win noise cannot make."""
        if not self.correct or self.baseline_ms is None or self.candidate_ms is None:
            return False
        return beyond_iqr(
            self.baseline_ms,
            self.baseline_iqr_ms or 0.0,
            self.candidate_ms,
            self.candidate_iqr_ms or 0.0,
        )

    def text(self) -> str:
        if not self.correct or self.speedup is None:
            return f"rejected: {self.error or 'incorrect'}"[:60]
        return (
            f"{self.speedup:.3f}x ({self.baseline_ms:.3g}±{self.baseline_iqr_ms:.2g} -> "
            f"{self.candidate_ms:.3g}±{self.candidate_iqr_ms:.2g} ms)"
        )


@dataclass(slots=True)
class TaskRow:
    """One KernelBench task. The search's own best speedup is kept for reference but is
    the maximum over noisy measurements (biased upwards); the figures that count come from
    fresh evaluations of the best kernel: against eager, and against torch.compile."""

    task: str
    level: str
    search_correct: bool = False
    search_speedup: float | None = None
    best_kernel_source: str | None = None
    stark_vs_eager: Comparison | None = None
    compile_vs_eager: Comparison | None = None
    stark_vs_compile: Comparison | None = None
    error: str | None = None
    extra_imports: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        """KernelBench's correctness of the kernel STARK hands back (re-checked when measured)."""
        if self.stark_vs_eager is not None:
            return self.search_correct and self.stark_vs_eager.correct
        return self.search_correct

    @property
    def speedup_vs_eager(self) -> float | None:
        return self.stark_vs_eager.speedup if self.correct and self.stark_vs_eager else None

    @property
    def speedup_vs_compile(self) -> float | None:
        if not self.correct or self.stark_vs_compile is None or not self.stark_vs_compile.correct:
            return None
        return self.stark_vs_compile.speedup

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> TaskRow:
        known = {k: v for k, v in value.items() if k in cls.__dataclass_fields__}
        for key in ("stark_vs_eager", "compile_vs_eager", "stark_vs_compile"):
            if isinstance(known.get(key), dict):
                known[key] = Comparison.from_dict(known[key])
        return cls(**known)


def aggregate(rows: list[TaskRow]) -> dict[str, Any]:
    """KernelBench-style figures: fast_p over all tasks (fast_1: correct and speedup > 1, as
    KernelBench counts it), geomeans over correct tasks, and how many wins are beyond noise."""
    n = len(rows) or 1
    correct = [r for r in rows if r.correct and r.speedup_vs_eager is not None]
    vs_compile = [r for r in correct if r.speedup_vs_compile is not None]
    compiled = [
        r.compile_vs_eager for r in rows if r.compile_vs_eager and r.compile_vs_eager.correct
    ]

    def beyond(comparisons: list[Comparison | None]) -> int:
        return sum(1 for c in comparisons if c is not None and c.beyond_noise)

    return {
        "tasks": len(rows),
        "correct": len(correct),
        "fast_0": len(correct) / n,
        "fast_1_vs_eager": sum(1 for r in correct if r.speedup_vs_eager > 1.0) / n,  # type: ignore[operator]
        "wins_beyond_iqr_vs_eager": beyond([r.stark_vs_eager for r in correct]),
        "fast_1_vs_compile": sum(1 for r in vs_compile if r.speedup_vs_compile > 1.0) / n,  # type: ignore[operator]
        "wins_beyond_iqr_vs_compile": beyond([r.stark_vs_compile for r in vs_compile]),
        "geomean_vs_eager": geomean([r.speedup_vs_eager for r in correct]),  # type: ignore[misc]
        "geomean_vs_compile": geomean([r.speedup_vs_compile for r in vs_compile]),  # type: ignore[misc]
        "compile_correct": len(compiled),
        "compile_geomean_vs_eager": geomean([c.speedup for c in compiled if c.speedup]),
        "compile_fast_1_vs_eager": sum(1 for c in compiled if c.speedup and c.speedup > 1.0) / n,
    }
