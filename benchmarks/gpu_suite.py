"""The GPU path in one script: build, check and time everything, print a table last.

On a machine with an NVIDIA GPU (see docs/gpu.md):

    python benchmarks/gpu_suite.py --json gpu.json                # core sections
    python benchmarks/gpu_suite.py --copy-only --kernelbench SNAPSHOT   # KernelBench -> .kb/
    python benchmarks/gpu_suite.py --sections env,kernelbench --kb-parts batch --json kb1.json
    python benchmarks/gpu_suite.py --sections env,kernelbench --kb-parts compile --json kb2.json
    python benchmarks/gpu_suite.py --report gpu.json kb1.json kb2.json  # one table

Sections (each row says ok, MISS for a missed performance target, FAIL for a wrong
verdict, or why it was skipped):
  env          device name and capability, torch / CUDA / Triton / nvcc versions
  cuda         the hand-written CUDA candidate: cold build vs cache hit, sm_XY in the
               built library, correctness, ref/new median +- IQR, speedup over eager
  triton       the Triton candidate, cold and warm (its own JIT cache)
  faults       a CUDA illegal memory access is a verdict and the next evaluation in the
               same Benchmarker passes; a CUDA compile error comes back with file(line)
  defences     torch.empty output, zeroed inputs, work on a side stream
  dobench      our median vs triton.testing.do_bench (median) on 3 kernels (<= 5%)
  spread       5 evaluations of the same kernel: max/min of medians - 1 (<= 2%)
  kernelbench  `stark batch` with the offline agent on the tasks in kernelbench_tasks.txt,
               per-task speedup and correctness, geomean and fast_1 vs eager and vs
               torch.compile (a `ModelNew` that compiles `Model`, timed the same way)

`--device cpu --dry-run` runs on a machine without a GPU in seconds: every CUDA row
says "skipped: no CUDA", and one small CPU evaluation proves the plumbing. CI runs it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO), str(Path(__file__).resolve().parent)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gpu_kernelbench as kb  # noqa: E402  (a sibling module, found through the path above)

from engine.bench import Benchmarker, EvalConfig, EvalResult  # noqa: E402

SECTIONS = ("env", "cuda", "triton", "faults", "defences", "dobench", "spread", "kernelbench")
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s != "kernelbench")
SECTION_RESERVE_S = 45.0  # do not start a section with less of --budget-s left
COMPILE_BASELINE_RESERVE_S = 60.0
FIXED_TIMING_TRIALS = 300
DOBENCH_TARGET = 0.05
SPREAD_TARGET = 0.02

EXAMPLES = REPO / "examples"
CANDIDATES = EXAMPLES / "candidates"
ADVERSARIAL = REPO / "tests" / "gpu" / "adversarial"
CHAIN_REFERENCE = EXAMPLES / "elementwise_chain.py"
CHAIN_CUDA = CANDIDATES / "elementwise_chain_cuda.py"
SOFTMAX_REFERENCE = EXAMPLES / "row_softmax.py"
SOFTMAX_TRITON = CANDIDATES / "row_softmax_triton.py"

NO_CUDA = "skipped: no CUDA"
KB_SETUP_CHECKS = ("copy tasks", "tasks", "imports beyond torch", "torch.compile baselines",
                   "stark batch")  # fmt: skip
NVCC_ERROR = re.compile(r"[^\s/]*\.cu\((\d+)\): error[^\n]*")


@dataclass(slots=True)
class Row:
    """One line of the final table."""

    section: str
    check: str
    status: str  # ok | info | MISS | FAIL | skipped: why
    value: str = ""
    target: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class SizedKernel:
    """A reference generated at a given size, for the do_bench comparison."""

    label: str
    template: str
    size: dict[str, int]
    dry_size: dict[str, int]
    informational: bool = False  # reported, not held to the target

    def source(self, dry_run: bool) -> str:
        return self.template.format(**(self.dry_size if dry_run else self.size))


_SOFTMAX = """import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return torch.softmax(x, dim=-1)


def get_inputs():
    return [torch.randn({rows}, {cols})]


def get_init_inputs():
    return []
"""

_CHAIN = """import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    def forward(self, x):
        return torch.clamp(F.gelu(x * 1.5 + 0.25) * torch.sigmoid(x), -0.5, 2.0)


def get_inputs():
    return [torch.randn({rows}, {cols})]


def get_init_inputs():
    return []
"""

_MATMUL = """import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


def get_inputs():
    return [torch.randn({n}, {n}), torch.randn({n}, {n})]


def get_init_inputs():
    return []
"""

SIZED_KERNELS = (
    SizedKernel("softmax 4096x8192 (small, ~0.1 ms)", _SOFTMAX, {"rows": 4096, "cols": 8192},
                {"rows": 64, "cols": 64}),
    SizedKernel("elementwise chain 8192x8192 (medium)", _CHAIN, {"rows": 8192, "cols": 8192},
                {"rows": 64, "cols": 64}),
    SizedKernel("fp32 matmul 6144^3 (large, ~10 ms)", _MATMUL, {"n": 6144}, {"n": 64}),
    # Launch-bound: both timers queue the start event behind an L2 flush, but ours
    # synchronises after every call and do_bench only at the end, so whatever CPU dispatch
    # the flush does not cover is inside our interval, not theirs. Shown, not judged.
    SizedKernel("softmax 1024x1024 (launch-bound, info)", _SOFTMAX,
                {"rows": 1024, "cols": 1024}, {"rows": 64, "cols": 64}, informational=True),
)  # fmt: skip

IDENTITY_CANDIDATE_SUFFIX = "\n\nclass ModelNew(Model):\n    pass\n"


def identity_candidate(reference_src: str) -> str:
    """The reference itself as a candidate: both sides run the very same kernels."""
    return reference_src.rstrip() + "\n" + IDENTITY_CANDIDATE_SUFFIX


def fmt_ms(stats: Any) -> str:
    if stats is None:
        return "-"
    return f"{stats.median:.4f} ± {stats.iqr:.4f} ms"


def fmt_ratio(value: float | None, suffix: str = "x") -> str:
    return "-" if value is None else f"{value:.3f}{suffix}"


def first_line(text: str | None, limit: int = 90) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def last_line(text: str | None, limit: int = 90) -> str:
    lines = (text or "").strip().splitlines()
    return first_line(lines[-1], limit) if lines else ""


def verdict_text(result: EvalResult) -> str:
    if result.correct:
        return f"correct, speedup {fmt_ratio(result.speedup)}"
    return f"rejected ({result.stage}): {first_line(result.error, 70)}"


class Suite:
    """Runs the selected sections, collecting rows and raw data."""

    def __init__(self, args: argparse.Namespace, argv: list[str] | None = None) -> None:
        self.args = args
        self.argv = argv or []
        self.rows: list[Row] = []
        self.data: dict[str, Any] = {}
        self.cuda = False
        self.work = Path(tempfile.mkdtemp(prefix="stark-gpu-suite-"))
        self.cache_dir = Path(args.cache_dir) if args.cache_dir else self.work / "cache"
        self._bench: Benchmarker | None = None
        self.started = time.monotonic()

    # -- plumbing ---------------------------------------------------------------------------
    def add(self, section: str, check: str, status: str, value: str = "", target: str = "",
            note: str = "") -> None:  # fmt: skip
        row = Row(section, check, status, value, target, note)
        self.rows.append(row)
        print(f"[gpu-suite] {section:<11} {check:<38} {status:<8} {value} {note}".rstrip(),
              file=sys.stderr, flush=True)  # fmt: skip

    @property
    def bench(self) -> Benchmarker:
        if self._bench is None:
            # Workers inherit the fork server's environment: a fresh Triton cache makes the
            # first Triton evaluation a real cold compile.
            os.environ.setdefault("TRITON_CACHE_DIR", str(self.work / "triton-cache"))
            # Inductor's compile pool can start its threads inside the first forward(), and
            # the benchmarker rejects threads left running; compile in-line (docs/gpu.md).
            os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
            self._bench = Benchmarker(cache_dir=self.cache_dir, work_root=self.work / "evals")
            self._bench.warm_up()
        return self._bench

    @property
    def fixed_trials(self) -> int:
        """Timed calls per side where a figure is compared (do_bench, spread): a fixed,
        generous count, so the medians compared are not cut short by the adaptive stop."""
        return 100 if self.args.quick else FIXED_TIMING_TRIALS

    def seconds_left(self) -> float:
        """Of --budget-s (inf without it): long steps check it so a device call ends in time."""
        if self.args.budget_s is None:
            return float("inf")
        return self.args.budget_s - (time.monotonic() - self.started)

    def config(self, **overrides: Any) -> EvalConfig:
        quick = self.args.quick or self.args.dry_run
        values: dict[str, Any] = {
            "device": "cuda" if self.cuda else "cpu",
            "correctness_trials": 5,
            "warmup_s": 0.05 if quick else 0.2,
            "timing_budget_s": 0.5 if quick else 2.0,
            "min_timing_trials": 5 if self.args.dry_run else 20,
            "max_timing_trials": 20 if self.args.dry_run else 400,
            "compile_timeout_s": 900.0,
            "run_timeout_s": 300.0,
        }
        values.update(overrides)
        return EvalConfig(**values)

    def evaluate(self, reference: str, candidate: str, **overrides: Any) -> EvalResult:
        return self.bench.evaluate(reference, candidate, self.config(**overrides))

    def skip_all(self, section: str, checks: list[str], why: str) -> None:
        for check in checks:
            self.add(section, check, why)

    def close(self) -> None:
        if self._bench is not None:
            self._bench.close()
        if not self.args.keep_work:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- sections -------------------------------------------------------------------------
    def run(self, sections: list[str]) -> None:
        self.section_env()
        steps: dict[str, Callable[[], None]] = {
            "cuda": self.section_cuda,
            "triton": self.section_triton,
            "faults": self.section_faults,
            "defences": self.section_defences,
            "dobench": self.section_dobench,
            "spread": self.section_spread,
            "kernelbench": self.section_kernelbench,
        }
        if not self.cuda and set(sections) - {"env", "kernelbench"}:
            self.section_cpu_smoke()  # the CUDA sections will skip: prove the plumbing instead
        for name in sections:
            if name == "env":
                continue
            if self.seconds_left() < SECTION_RESERVE_S:
                self.add(name, "section", "skipped: --budget-s spent")
                continue
            start = time.monotonic()
            try:
                steps[name]()
            except Exception as exc:  # noqa: BLE001 - one broken section must not hide the rest
                self.add(name, "section", "FAIL", f"{type(exc).__name__}: {first_line(str(exc))}")
            self.data.setdefault("section_seconds", {})[name] = round(time.monotonic() - start, 1)
            if self.args.json:  # a call killed at its limit still leaves what finished
                write_json(Path(self.args.json), self.rows, self.data, self.argv)

    def section_env(self) -> None:
        import torch

        want = self.args.device
        available = torch.cuda.is_available()
        if want == "cuda" and not available:
            self.add("env", "device", "FAIL", "--device cuda but torch sees no CUDA device")
        self.cuda = available and want in ("auto", "cuda")
        info: dict[str, Any] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "triton": _version_of("triton"),
            "nvcc": _nvcc_version(),
            "host": platform.node(),
        }
        if self.cuda:
            props = torch.cuda.get_device_properties(0)
            info.update(
                name=props.name,
                capability=f"{props.major}.{props.minor}",
                sm_count=props.multi_processor_count,
                memory_gib=round(props.total_memory / 2**30, 1),
                l2_mib=round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
            )
            self.add("env", "device", "ok", f"{props.name} (sm_{props.major}{props.minor})",
                     note=f"{props.multi_processor_count} SMs, {info['memory_gib']} GiB")  # fmt: skip
        else:
            self.add("env", "device", "ok", f"cpu ({platform.processor() or platform.machine()})",
                     note="no CUDA: GPU rows are skipped")  # fmt: skip
        self.add("env", "versions", "ok",
                 f"torch {info['torch']}, CUDA {info['torch_cuda']}, triton {info['triton']}",
                 note=f"nvcc {info['nvcc']}")  # fmt: skip
        self.data["env"] = info

    def section_cpu_smoke(self) -> None:
        """Without CUDA: one real evaluation through the benchmarker proves the plumbing."""
        kernel = SIZED_KERNELS[0]
        ref = kernel.source(dry_run=True)
        result = self.evaluate(ref, identity_candidate(ref), timing_trials=5)
        self.data["cpu_smoke"] = result.to_dict()
        ok = result.correct and result.ref_ms is not None
        self.add("env", "harness smoke (cpu, identity)", "ok" if ok else "FAIL",
                 verdict_text(result), note=fmt_ms(result.ref_ms))  # fmt: skip

    def section_cuda(self) -> None:
        checks = ["build cold", "build cache hit", "arch of built code", "correct", "speedup"]
        if not self.cuda:
            return self.skip_all("cuda", checks, NO_CUDA)
        ref, cand = CHAIN_REFERENCE.read_text(), CHAIN_CUDA.read_text()
        cold = self.evaluate(ref, cand)
        built_before = _built_libraries(self.cache_dir)
        warm = self.evaluate(ref, cand)
        built_after = _built_libraries(self.cache_dir)
        self.data["cuda"] = {"cold": cold.to_dict(), "warm": warm.to_dict()}
        self.add("cuda", "build cold", "ok" if cold.compiled else "FAIL",
                 f"{cold.compile_s or 0:.1f} s", note=first_line(cold.error))  # fmt: skip
        rebuilt = built_before != built_after
        hit_ok = warm.compiled and not rebuilt and bool(built_before)
        self.add("cuda", "build cache hit", "ok" if hit_ok else "FAIL",
                 f"{warm.compile_s or 0:.2f} s",
                 target="no rebuild", note="rebuilt!" if rebuilt else
                 f"{_speedup_text(cold.compile_s, warm.compile_s)} faster than cold")  # fmt: skip
        self.add("cuda", "arch of built code", *_arch_check(built_after))
        self.add("cuda", "correct", "ok" if cold.correct and warm.correct else "FAIL",
                 verdict_text(warm), note=f"max abs err {warm.max_abs_err}")  # fmt: skip
        best = warm if warm.correct else cold
        beats = best.correct and (best.speedup or 0) > 1.0
        self.add("cuda", "speedup", "ok" if beats else "MISS", fmt_ratio(best.speedup),
                 target="> 1x (beats eager)",
                 note=f"ref {fmt_ms(best.ref_ms)}, new {fmt_ms(best.new_ms)}")  # fmt: skip
        return None

    def section_triton(self) -> None:
        checks = ["cold (Triton JIT)", "warm", "speedup"]
        if not self.cuda:
            return self.skip_all("triton", checks, NO_CUDA)
        if _version_of("triton") is None:
            return self.skip_all("triton", checks, "skipped: triton not installed")
        ref, cand = SOFTMAX_REFERENCE.read_text(), SOFTMAX_TRITON.read_text()
        cold = self.evaluate(ref, cand)
        warm = self.evaluate(ref, cand)
        self.data["triton"] = {"cold": cold.to_dict(), "warm": warm.to_dict()}
        self.add("triton", "cold (Triton JIT)", "ok" if cold.correct else "FAIL",
                 verdict_text(cold), note=f"compile+first call {cold.kernel_s or 0:.1f} s")  # fmt: skip
        self.add("triton", "warm", "ok" if warm.correct else "FAIL", verdict_text(warm),
                 note=f"ref {fmt_ms(warm.ref_ms)}, new {fmt_ms(warm.new_ms)}")  # fmt: skip
        self.add("triton", "speedup", "ok" if (warm.speedup or 0) > 1.0 else "MISS",
                 fmt_ratio(warm.speedup), target="> 1x (informational)")  # fmt: skip
        return None

    def section_faults(self) -> None:
        checks = ["illegal memory access", "next evaluation after it", "CUDA compile error"]
        if not self.cuda:
            return self.skip_all("faults", checks, NO_CUDA)
        ref = CHAIN_REFERENCE.read_text()
        bad = self.evaluate(ref, (ADVERSARIAL / "cuda_illegal_memory_access.py").read_text())
        after = self.evaluate(ref, CHAIN_CUDA.read_text())
        broken = self.evaluate(ref, (ADVERSARIAL / "cuda_compile_error.py").read_text())
        self.data["faults"] = {
            "illegal_memory_access": bad.to_dict(),
            "after": after.to_dict(),
            "compile_error": broken.to_dict(),
        }
        said_ima = "illegal memory access" in f"{bad.error}\n{bad.log}".lower()
        self.add("faults", "illegal memory access", "ok" if not bad.correct and bad.error else "FAIL",
                 verdict_text(bad), target="verdict",
                 note="" if said_ima else "error text does not name the illegal access")  # fmt: skip
        self.add("faults", "next evaluation after it", "ok" if after.correct else "FAIL",
                 verdict_text(after), target="correct")  # fmt: skip
        match = NVCC_ERROR.search(broken.log or "") or NVCC_ERROR.search(broken.error or "")
        ok = not broken.compiled and broken.stage == "compile" and match is not None
        self.add("faults", "CUDA compile error", "ok" if ok else "FAIL",
                 first_line(match.group(0) if match else broken.error),
                 target="compiled=False, file(line) in log")  # fmt: skip
        return None

    def section_defences(self) -> None:
        cases = {
            "torch.empty output": ("empty_output.py", _rejected),
            "zeroes its inputs": ("zero_inputs.py", _rejected),
            "work on a side stream": ("side_stream.py", _rejected_or_side_stream),
            "side stream only while timed": ("side_stream_after_checks.py", _side_stream_flagged),
        }
        if not self.cuda:
            return self.skip_all("defences", list(cases), NO_CUDA)
        ref = CHAIN_REFERENCE.read_text()
        self.data["defences"] = {}
        for check, (file_name, judge) in cases.items():
            result = self.evaluate(ref, (ADVERSARIAL / file_name).read_text())
            self.data["defences"][file_name] = result.to_dict()
            flags = ", ".join(result.flags) or "no flags"
            self.add("defences", check, "ok" if judge(result) else "FAIL", verdict_text(result),
                     target="rejected or flagged", note=flags)  # fmt: skip
        return None

    def section_dobench(self) -> None:
        checks = [k.label for k in SIZED_KERNELS]
        if not self.cuda:
            return self.skip_all("dobench", checks, NO_CUDA)
        if _version_of("triton") is None:
            return self.skip_all("dobench", checks, "skipped: triton not installed")
        ours: dict[str, EvalResult] = {}
        for kernel in SIZED_KERNELS:
            ref = kernel.source(dry_run=False)
            ours[kernel.label] = self.evaluate(ref, identity_candidate(ref),
                                               timing_trials=self.fixed_trials)  # fmt: skip
        self.data["dobench"] = {}
        for kernel in SIZED_KERNELS:
            result = ours[kernel.label]
            theirs = _do_bench_median_ms(kernel.source(dry_run=False), self.work)
            entry = {"ours": result.to_dict(), "do_bench_median_ms": theirs}
            self.data["dobench"][kernel.label] = entry
            if result.ref_ms is None:
                self.add("dobench", kernel.label, "FAIL", verdict_text(result))
                continue
            diff = abs(result.ref_ms.median / theirs - 1.0)
            entry["relative_difference"] = diff
            status = "ok" if diff <= DOBENCH_TARGET else "MISS"
            self.add("dobench", kernel.label, "info" if kernel.informational else status,
                     f"ours {result.ref_ms.median:.4f} ms vs do_bench {theirs:.4f} ms",
                     target="-" if kernel.informational else f"<= {DOBENCH_TARGET:.0%}",
                     note=f"diff {diff:.1%}; ours n={result.ref_ms.n}")  # fmt: skip
        return None

    def section_spread(self) -> None:
        runs = 3 if self.args.quick else 5
        check = f"{runs} evaluations of the CUDA candidate"
        if not self.cuda:
            return self.skip_all("spread", [check], NO_CUDA)
        ref, cand = CHAIN_REFERENCE.read_text(), CHAIN_CUDA.read_text()
        results = [self.evaluate(ref, cand, timing_trials=self.fixed_trials) for _ in range(runs)]
        self.data["spread"] = [r.to_dict() for r in results]
        if not all(r.correct and r.new_ms and r.ref_ms for r in results):
            return self.add("spread", check, "FAIL", "an evaluation failed")
        new = [r.new_ms.median for r in results if r.new_ms]
        ref_medians = [r.ref_ms.median for r in results if r.ref_ms]
        spread = max(new) / min(new) - 1.0
        ref_spread = max(ref_medians) / min(ref_medians) - 1.0
        self.add("spread", check, "ok" if spread <= SPREAD_TARGET else "MISS",
                 f"{spread:.2%} (candidate)", target=f"<= {SPREAD_TARGET:.0%}",
                 note=f"reference {ref_spread:.2%}; medians {', '.join(f'{m:.4f}' for m in new)} ms")  # fmt: skip
        return None

    def section_kernelbench(self) -> None:
        args = self.args
        kb_dir = Path(args.kb_dir)
        tasks = [t for t in kb.read_task_list(Path(args.kb_tasks))
                 if kb.level_of(t) in args.kb_levels]  # fmt: skip
        if not tasks:
            return self.add("kernelbench", "tasks", "FAIL", f"no tasks in levels {args.kb_levels}")
        if args.kernelbench:
            copied = kb.copy_tasks(Path(args.kernelbench), kb_dir, tasks)
            self.add("kernelbench", "copy tasks", "ok", f"{len(copied)} files -> {kb_dir}")
        try:
            files = kb.local_task_files(kb_dir, tasks)
        except FileNotFoundError as exc:
            return self.add("kernelbench", "tasks", "skipped: no KernelBench copies", str(exc)[:90])
        imports = {f.name: kb.extra_imports(f.read_text()) for f in files}
        beyond = {name: mods for name, mods in imports.items() if mods}
        self.add("kernelbench", "imports beyond torch", "ok" if not beyond else "MISS",
                 "none" if not beyond else json.dumps(beyond)[:90],
                 note=f"{len(files)} files must run unchanged")  # fmt: skip
        for f in files:
            ast.parse(kb.compile_baseline_source(f.read_text()))
        self.add("kernelbench", "torch.compile baselines", "ok", f"{len(files)} sources generated")
        if args.dry_run:
            return self.add("kernelbench", "stark batch", "skipped: dry run")
        table: dict[str, kb.TaskRow] = {
            f.name: kb.TaskRow(task=f.name, level=f.parent.name, extra_imports=imports[f.name])
            for f in files
        }
        if "batch" in args.kb_parts:
            self._kb_batch(files, table)
        if "compile" in args.kb_parts:
            self._kb_compile_baselines(files, table)
        self.data["kernelbench"] = {"tasks": {k: v.to_dict() for k, v in table.items()}}
        kernelbench_rows(self, table)
        return None

    def _kb_batch(self, files: list[Path], table: dict[str, kb.TaskRow]) -> None:
        out_dir = Path(self.args.kb_out) if self.args.kb_out else self.work / "kb-runs"
        rounds = self.args.kb_rounds
        device = "cuda" if self.cuda else "cpu"
        timeout = min(self.args.kb_timeout, max(30.0, self.seconds_left()))
        run = kb.run_batch(files, out_dir, rounds, device, timeout, REPO)
        self.data["kernelbench_batch"] = asdict(run)
        if run.error or run.summary is None:
            self.add("kernelbench", "stark batch", "FAIL", first_line(run.error),
                     note=last_line(run.stderr_tail))  # fmt: skip
            if run.summary is None:
                return
        else:
            self.add("kernelbench", "stark batch", "ok", f"{len(files)} tasks, {rounds} rounds",
                     note=f"{run.seconds:.0f} s on {device}")  # fmt: skip
        entries = kb.task_entries(run.summary)
        for path in files:
            entry = next((e for e in entries if kb.entry_matches(e, path)), None)
            row = table[path.name]
            if entry is None:
                row.error = "not in the batch summary"
                continue
            row.search_correct = bool(entry.get("correct"))
            speedup = entry.get("best_speedup")
            row.search_speedup = float(speedup) if speedup is not None else None
            row.error = entry.get("error")
            best = Path(str(entry.get("task_dir") or "")) / "best_kernel.py"
            if row.search_correct and best.is_file():
                row.best_kernel_source = best.read_text()
        # The search's best is the maximum of noisy measurements: measure it again, fresh.
        for path in files:
            row = table[path.name]
            if row.best_kernel_source is None:
                continue
            if self.seconds_left() < COMPILE_BASELINE_RESERVE_S:
                row.error = "; ".join(filter(None, [row.error, "re-measure: no budget"]))
                continue
            result = self.evaluate(path.read_text(), row.best_kernel_source, run_timeout_s=600.0)
            row.stark_vs_eager = comparison(result)

    def _kb_compile_baselines(self, files: list[Path], table: dict[str, kb.TaskRow]) -> None:
        if self.args.kb_from:
            earlier = load_task_rows(Path(self.args.kb_from))
            for name, row in table.items():
                before = earlier.get(name)
                if before is not None and row.best_kernel_source is None:
                    row.search_correct, row.search_speedup = (
                        before.search_correct,
                        before.search_speedup,
                    )
                    row.best_kernel_source, row.stark_vs_eager = (
                        before.best_kernel_source,
                        before.stark_vs_eager,
                    )
                    row.error = before.error
        for path in files:
            row = table[path.name]
            ref = path.read_text()
            steps = [("compile_vs_eager", ref, kb.compile_baseline_source(ref))]
            if row.best_kernel_source is not None:
                steps.append(("stark_vs_compile", kb.compiled_reference_source(ref),
                              row.best_kernel_source))  # fmt: skip
            for attribute, reference, candidate in steps:
                if self.seconds_left() < COMPILE_BASELINE_RESERVE_S:
                    row.error = "; ".join(filter(None, [row.error, f"{attribute}: no budget"]))
                    continue
                result = self.evaluate(reference, candidate, run_timeout_s=600.0)
                setattr(row, attribute, comparison(result))
                if not result.correct and "torch_patched" in result.flags:
                    row.error = "; ".join(filter(None, [row.error, f"{attribute}: torch_patched "
                                          "(the fork server must import torch._dynamo; docs/gpu.md)"]))  # fmt: skip


def comparison(result: EvalResult) -> kb.Comparison:
    """The figures of one evaluation that a KernelBench row reports."""
    return kb.Comparison(
        correct=result.correct,
        speedup=result.speedup if result.correct else None,
        baseline_ms=result.ref_ms.median if result.ref_ms else None,
        baseline_iqr_ms=result.ref_ms.iqr if result.ref_ms else None,
        candidate_ms=result.new_ms.median if result.new_ms else None,
        candidate_iqr_ms=result.new_ms.iqr if result.new_ms else None,
        error=None if result.correct else verdict_text(result),
    )


def load_task_rows(path: Path) -> dict[str, kb.TaskRow]:
    """KernelBench rows of an earlier --json report (e.g. the batch part of another call)."""
    payload = json.loads(path.read_text())
    if payload.get("suite") != "stark-gpu-suite":
        raise ValueError(f"{path} is not a gpu_suite JSON report")
    tasks = payload.get("data", {}).get("kernelbench", {}).get("tasks", {})
    return {name: kb.TaskRow.from_dict(task) for name, task in tasks.items()}


def kernelbench_rows(suite: Suite, table: dict[str, kb.TaskRow]) -> None:
    """Per-task rows and the aggregate, from whatever parts have run (batch, compile)."""
    for row in table.values():
        batch_ran = row.search_correct or row.search_speedup is not None or bool(row.error)
        # MISS: the search found no correct kernel (a result, not a broken harness).
        compile_ok = bool(row.compile_vs_eager and row.compile_vs_eager.correct)
        good = row.correct if batch_ran else compile_ok
        vs_eager = row.stark_vs_eager.text() if row.stark_vs_eager else "not measured"
        vs_compile = row.stark_vs_compile.text() if row.stark_vs_compile else "-"
        compiled = row.compile_vs_eager.text() if row.compile_vs_eager else "-"
        suite.add("kernelbench", row.task[:38], "ok" if good else "MISS",
                  f"STARK vs eager {vs_eager}; vs compile {vs_compile}",
                  note=f"torch.compile vs eager {compiled}; search said "
                  f"{fmt_ratio(row.search_speedup)}"
                  + (f"; {first_line(row.error, 50)}" if row.error else ""))  # fmt: skip
    figures = kb.aggregate(list(table.values()))
    suite.data.setdefault("kernelbench", {})["aggregate"] = figures
    suite.add("kernelbench", "geomean / fast_1 vs eager", "ok",
              f"{fmt_ratio(figures['geomean_vs_eager'])} / {figures['fast_1_vs_eager']:.2f}",
              note=f"fast_0 {figures['fast_0']:.2f} ({figures['correct']}/{figures['tasks']}); "
              f"{figures['wins_beyond_iqr_vs_eager']} wins beyond IQR")  # fmt: skip
    suite.add("kernelbench", "geomean / fast_1 vs torch.compile", "ok",
              f"{fmt_ratio(figures['geomean_vs_compile'])} / {figures['fast_1_vs_compile']:.2f}",
              note=f"{figures['wins_beyond_iqr_vs_compile']} wins beyond IQR; torch.compile "
              f"itself: {fmt_ratio(figures['compile_geomean_vs_eager'])} vs eager "
              f"({figures['compile_correct']} correct)")  # fmt: skip


# -- helpers ----------------------------------------------------------------------------------
def _rejected(result: EvalResult) -> bool:
    return not result.correct


def _rejected_or_side_stream(result: EvalResult) -> bool:
    return not result.correct or "side_stream_suspected" in result.flags


def _side_stream_flagged(result: EvalResult) -> bool:
    return "side_stream_suspected" in result.flags


def _speedup_text(cold: float | None, warm: float | None) -> str:
    if not cold or not warm:
        return "?"
    return f"{cold / warm:.0f}x"


def _version_of(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - installed without metadata
        return "installed"


def _nvcc_path() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ("/usr/local/cuda/bin/nvcc",):
        if os.path.exists(candidate):
            return candidate
    return None


def _nvcc_version() -> str | None:
    nvcc = _nvcc_path()
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"release ([\d.]+)", out)
    return match.group(1) if match else "unknown"


def _built_libraries(cache_dir: Path) -> dict[str, float]:
    """Every built extension under the compile cache, with its mtime (a rebuild changes it)."""
    return {str(p): p.stat().st_mtime for p in sorted(cache_dir.rglob("*.so"))}


def _arch_check(libraries: dict[str, float]) -> tuple[str, str, str, str]:
    """(status, value, target, note): is there machine code for this device's sm_XY?"""
    import torch

    if not libraries:
        return "FAIL", "no built library", "", ""
    major, minor = torch.cuda.get_device_capability()
    wanted = f"sm_{major}{minor}"
    tool = shutil.which("cuobjdump") or (
        "/usr/local/cuda/bin/cuobjdump" if os.path.exists("/usr/local/cuda/bin/cuobjdump") else None
    )
    if tool is None:
        return "skipped: no cuobjdump", "", wanted, ""
    archs: set[str] = set()
    for library in libraries:
        out = subprocess.run([tool, "--list-elf", library], capture_output=True, text=True,
                             check=False).stdout  # fmt: skip
        archs.update(re.findall(r"sm_\d+a?", out))
    status = "ok" if any(a.rstrip("a") == wanted for a in archs) else "FAIL"
    return status, ", ".join(sorted(archs)) or "no ELF", wanted, "cuobjdump --list-elf"


@contextlib.contextmanager
def _module_from_source(source: str, work: Path) -> Iterator[Any]:
    path = Path(tempfile.mkstemp(suffix=".py", prefix="stark_dobench_", dir=work)[1])
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        path.unlink(missing_ok=True)


def _do_bench_median_ms(source: str, work: Path) -> float:
    """triton.testing.do_bench in this process, on the same reference at the same size."""
    import torch
    import triton.testing

    with _module_from_source(source, work) as module, torch.no_grad():
        model = module.Model(*module.get_init_inputs()).cuda().eval()
        inputs = [x.cuda() if isinstance(x, torch.Tensor) else x for x in module.get_inputs()]

        def call() -> Any:
            return model(*inputs)

        value = triton.testing.do_bench(call, return_mode="median")
    torch.cuda.empty_cache()
    return float(value)


# -- table and JSON -----------------------------------------------------------------------------
def print_table(rows: list[Row], env: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"STARK GPU suite on {env.get('name') or 'cpu'}"
    if env.get("capability"):
        title += f" (capability {env['capability']})"
    table = Table(title=title, show_lines=False)
    for column in ("section", "check", "status", "value", "target", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        style = {"ok": "green", "info": "cyan", "MISS": "yellow", "FAIL": "bold red"}.get(
            row.status, "dim"
        )
        table.add_row(row.section, row.check, f"[{style}]{row.status}[/]", row.value, row.target,
                      row.note)  # fmt: skip
    Console(width=200, force_terminal=False, soft_wrap=False).print(table)
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("ok", "MISS", "FAIL")}
    skipped = sum(1 for r in rows if r.status.startswith("skipped"))
    print(f"{counts['ok']} ok, {counts['MISS']} missed targets, {counts['FAIL']} failed, "
          f"{skipped} skipped")  # fmt: skip


def write_json(path: Path, rows: list[Row], data: dict[str, Any], argv: list[str]) -> None:
    payload = {
        "suite": "stark-gpu-suite",
        "version": 1,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": argv,
        "rows": [asdict(r) for r in rows],
        "data": data,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))


def merge_reports(paths: list[Path]) -> tuple[list[Row], dict[str, Any]]:
    """Rows and data of several runs (e.g. core on one call, KernelBench on another);
    a later file's row replaces an earlier one with the same section and check, and
    KernelBench per-task fields are merged so batch and torch.compile parts combine."""
    rows: dict[tuple[str, str], Row] = {}
    data: dict[str, Any] = {}
    kb_tasks: dict[str, dict[str, Any]] = {}
    for path in paths:
        payload = json.loads(path.read_text())
        if payload.get("suite") != "stark-gpu-suite":
            raise ValueError(f"{path} is not a gpu_suite JSON report")
        for raw in payload.get("rows", []):
            row = Row(**raw)
            if row.section == "kernelbench" and row.check not in KB_SETUP_CHECKS:
                continue  # per-task and aggregate rows are recomputed from the merged data
            rows[(row.section, row.check)] = row
        for key, value in payload.get("data", {}).items():
            if key == "kernelbench":
                for name, task in value.get("tasks", {}).items():
                    merged = kb_tasks.setdefault(name, {})
                    merged.update({k: v for k, v in task.items() if v not in (None, False, [])})
            elif key == "env" and "env" in data and not value.get("name"):
                continue  # keep the GPU's env over a CPU run's
            else:
                data[key] = value
    merged_rows = list(rows.values())
    if kb_tasks:
        table = {name: kb.TaskRow.from_dict(task) for name, task in kb_tasks.items()}
        collector = _RowCollector()
        kernelbench_rows(collector, table)  # type: ignore[arg-type]
        merged_rows += collector.rows
        data["kernelbench"] = {"tasks": {k: v.to_dict() for k, v in table.items()}}
        data["kernelbench"]["aggregate"] = collector.data["kernelbench"]["aggregate"]
    return merged_rows, data


class _RowCollector:
    """Quacks like Suite for kernelbench_rows, without running anything."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.data: dict[str, Any] = {}

    def add(self, section: str, check: str, status: str, value: str = "", target: str = "",
            note: str = "") -> None:  # fmt: skip
        self.rows.append(Row(section, check, status, value, target, note))


# -- command line -----------------------------------------------------------------------------
def parse_sections(text: str) -> list[str]:
    if text == "all":
        return list(SECTIONS)
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SECTIONS)}"
        )
    return chosen


def parse_levels(text: str) -> list[str]:
    levels = [s.strip() for s in text.split(",") if s.strip()]
    if not levels or any(not re.fullmatch(r"level\d+", s) for s in levels):
        raise argparse.ArgumentTypeError(f"levels look like level1,level2; got {text!r}")
    return levels


def parse_parts(text: str) -> list[str]:
    parts = [s.strip() for s in text.split(",") if s.strip()]
    if not parts or any(p not in ("batch", "compile") for p in parts):
        raise argparse.ArgumentTypeError("--kb-parts takes batch, compile or batch,compile")
    return parts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_suite.py",
        description="Build, check and time STARK's GPU path; prints a table last.",
    )
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--dry-run", action="store_true",
                        help="smallest sizes, no KernelBench batch; with --device cpu: CI check")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="short timing budgets, 3 spread runs")
    parser.add_argument("--sections", type=parse_sections, default=list(DEFAULT_SECTIONS),
                        help=f"comma list or 'all' (default: all but kernelbench); {','.join(SECTIONS)}")  # fmt: skip
    parser.add_argument("--kernelbench", metavar="SNAPSHOT",
                        help="KernelBench checkout or bare git dir to copy tasks from; "
                        "adds the kernelbench section")  # fmt: skip
    parser.add_argument("--kb-dir", default=str(REPO / kb.DEFAULT_KB_DIR),
                        help="git-ignored folder for the copied problems (default .kb)")  # fmt: skip
    parser.add_argument("--kb-tasks", default=str(kb.TASKS_FILE), help="task list file")
    parser.add_argument("--kb-levels", type=parse_levels, default=["level1", "level2"])
    parser.add_argument("--kb-parts", type=parse_parts, default=["batch", "compile"],
                        help="batch (stark batch), compile (torch.compile baselines) or both")  # fmt: skip
    parser.add_argument("--kb-rounds", type=int, default=3,
                        help="stark batch --rounds (round 0 is the seed: the reference itself)")  # fmt: skip
    parser.add_argument("--kb-timeout", type=float, default=480.0, help="seconds for stark batch")
    parser.add_argument("--kb-out", help="stark batch --out (default: a temp dir)")
    parser.add_argument("--kb-from", metavar="JSON",
                        help="with --kb-parts compile: take the best kernels from this earlier "
                        "--json report (a batch part run in another call)")  # fmt: skip
    parser.add_argument("--copy-only", action="store_true",
                        help="with --kernelbench: copy the tasks into --kb-dir and exit")  # fmt: skip
    parser.add_argument("--budget-s", type=float, default=None,
                        help="wall-clock budget: later sections and KernelBench steps are "
                        "skipped (and reported) rather than overrun it")  # fmt: skip
    parser.add_argument("--cache-dir", help="compile cache (default: fresh, so builds are cold)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temp work folder")
    parser.add_argument("--json", metavar="PATH", help="write every row and raw result here")
    parser.add_argument("--report", nargs="+", metavar="JSON",
                        help="print one table from earlier --json files; runs nothing")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kb_rounds < 1:
        parser.error("--kb-rounds must be >= 1")
    if args.budget_s is not None and args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    if args.report:
        missing = [p for p in args.report if not Path(p).is_file()]
        if missing:
            parser.error(f"no such report: {', '.join(missing)}")
        try:
            rows, data = merge_reports([Path(p) for p in args.report])
        except (ValueError, KeyError, TypeError) as exc:
            parser.error(str(exc))
        print_table(rows, data.get("env", {}))
        if args.json:
            write_json(Path(args.json), rows, data, argv)
        return 1 if any(r.status == "FAIL" for r in rows) else 0
    if args.kb_from and not Path(args.kb_from).is_file():
        parser.error(f"--kb-from {args.kb_from}: no such file")
    if args.kernelbench and not Path(args.kernelbench).exists():
        parser.error(f"--kernelbench {args.kernelbench}: no such directory")
    if args.copy_only:
        if not args.kernelbench:
            parser.error("--copy-only needs --kernelbench SNAPSHOT")
        copied = kb.copy_tasks(Path(args.kernelbench), Path(args.kb_dir), kb.read_task_list(
            Path(args.kb_tasks)))  # fmt: skip
        print(f"copied {len(copied)} KernelBench problems into {args.kb_dir}")
        return 0
    sections = list(args.sections)
    if args.kernelbench and "kernelbench" not in sections:
        sections.append("kernelbench")

    suite = Suite(args, argv)
    try:
        suite.run(sections)
    finally:
        suite.close()
    print_table(suite.rows, suite.data.get("env", {}))
    if args.json:
        write_json(Path(args.json), suite.rows, suite.data, argv)
        print(f"results written to {args.json}")
    return 1 if any(r.status == "FAIL" for r in suite.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
