"""The embedded kernel writer on KernelBench problems that run on a CPU (issue 13's targets).

    .venv/bin/python benchmarks/kernel_writer.py --kernelbench SNAPSHOT [--rounds 12]
        [--tasks benchmarks/kernel_writer_tasks.txt] [--budget-mb 48] [--out DIR]
        [--json results.json] [--markdown table.md]

SNAPSHOT is a checkout (or the fetch tool's bare git snapshot) of ScalingIntelligence/KernelBench.
The problem files are copied into the git-ignored `.kb/cpu/` folder, never committed.

KernelBench's shapes are sized for GPUs (Level 1's ReLU reads 4096 x 393216 floats, 6 GiB),
so each problem is scaled down before it runs: its largest module-level integer size is
halved, again and again, until the inputs and parameters fit `--budget-mb`. The table lists
every change (e.g. `batch_size 4096->16`); nothing else in the file changes.

Then one `stark batch` run (the command a user runs: embedded agent, `--device cpu`) does the
search per problem, and after it re-measures each best kernel interleaved against eager and
against torch.compile, median and IQR for both sides. Targets: correct on >= 90%, the best
kernel contains generated C++ on >= 75%, geomean speedup >= 1.3x over eager and >= 1.0x over
torch.compile. A problem without a correct kernel counts as 1.0x (its user keeps the
reference) in the geomeans.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TASKS = REPO / "benchmarks" / "kernel_writer_tasks.txt"


@dataclass(slots=True)
class Problem:
    name: str
    path: Path
    changes: list[str] = field(default_factory=list)
    input_mb: float = 0.0


@dataclass(slots=True)
class Row:
    name: str
    changes: str
    correct: bool
    generated: list[str]
    vs_eager: dict[str, Any] | None
    vs_compile: dict[str, Any] | None
    best_title: str
    error: str | None = None

    def eager_speedup(self) -> float:
        return float(self.vs_eager["speedup"]) if self.correct and self.vs_eager else 1.0

    def compile_speedup(self) -> float:
        return float(self.vs_compile["speedup"]) if self.correct and self.vs_compile else 1.0


def read_kernelbench(snapshot: Path, relative: str) -> str:
    """A problem file from a checkout, or from the fetch tool's bare snapshot via git."""
    direct = snapshot / relative
    if direct.is_file():
        return direct.read_text()
    done = subprocess.run(
        ["git", "--git-dir", str(snapshot), "show", f"HEAD:{relative}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{relative}: not in {snapshot} ({done.stderr.strip()})")
    return done.stdout


def input_megabytes(source: str) -> float:
    """Bytes of get_inputs() plus the model's parameters, measured without allocating."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    namespace: dict[str, Any] = {"__name__": "kb_problem"}
    exec(compile(source, "problem.py", "exec"), namespace)  # noqa: S102 - KernelBench file
    with FakeTensorMode():
        inputs = namespace["get_inputs"]()
        model = namespace["Model"](*namespace["get_init_inputs"]())
        total = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))
        total += sum(p.numel() * p.element_size() for p in model.parameters())
    return total / 2**20


def shrink(source: str, budget_mb: float) -> tuple[str, list[str], float]:
    """`source` with its module-level int sizes halved until it fits; (text, changes, MB)."""
    tree = ast.parse(source)
    sizes: dict[str, int] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and type(node.value.value) is int
            and node.value.value >= 2
        ):
            sizes[node.targets[0].id] = node.value.value
    original = dict(sizes)
    current = source
    megabytes = input_megabytes(current)
    for _ in range(64):
        if megabytes <= budget_mb:
            break
        name = max(sizes, key=lambda n: sizes[n])
        if sizes[name] <= 2:
            raise SystemExit(f"cannot shrink below {megabytes:.0f} MB")
        sizes[name] //= 2
        current = _with_sizes(source, sizes)
        megabytes = input_megabytes(current)
    changes = [f"{n} {original[n]}->{sizes[n]}" for n in sizes if sizes[n] != original[n]]
    return current, changes, megabytes


def _with_sizes(source: str, sizes: dict[str, int]) -> str:
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in sizes and node.lineno == node.end_lineno:
                lines[node.lineno - 1] = f"{name} = {sizes[name]}"
    return "\n".join(lines) + "\n"


def prepare(snapshot: Path, tasks: list[str], budget_mb: float, dest: Path) -> list[Problem]:
    dest.mkdir(parents=True, exist_ok=True)
    problems = []
    for relative in tasks:
        source = read_kernelbench(snapshot, relative)
        shrunk, changes, megabytes = shrink(source, budget_mb)
        path = dest / Path(relative).name
        path.write_text(shrunk)
        problems.append(Problem(path.stem, path, changes, megabytes))
        print(f"{path.name}: {', '.join(changes) or 'unchanged'} ({megabytes:.1f} MB)", flush=True)
    return problems


def run_batch(problems: list[Problem], rounds: int, seed: int, out: Path) -> Path:
    """One `stark batch` over the problems; the run directory it wrote."""
    env = {**os.environ, "STARK_OFFLINE_KERNELS": "1"}
    command = [
        str(REPO / ".venv" / "bin" / "stark"),
        "batch",
        *[str(p.path) for p in problems],
        "--agent",
        "offline",
        "--device",
        "cpu",
        "--rounds",
        str(rounds),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--json",
    ]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, env=env, check=False, stdout=subprocess.PIPE, text=True)
    if done.returncode not in (0,):
        print(f"stark batch exited {done.returncode}", file=sys.stderr)
    runs = sorted(out.glob("batch-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit("stark batch wrote no run directory")
    return runs[-1]


def rows_from(run_dir: Path, problems: list[Problem]) -> list[Row]:
    summary = json.loads((run_dir / "summary.json").read_text())
    by_reference = {Path(t["reference"]).stem: t for t in summary["tasks"]}
    rows = []
    for problem in problems:
        task = by_reference.get(problem.name, {})
        task_summary = _task_summary(task)
        remeasured = (task_summary or {}).get("remeasured") or {}
        rows.append(
            Row(
                name=problem.name,
                changes=", ".join(problem.changes) or "-",
                correct=bool(task_summary and task_summary.get("correct")),
                generated=list((task_summary or {}).get("best_generated") or []),
                vs_eager=remeasured.get("vs_eager"),
                vs_compile=remeasured.get("vs_compile"),
                best_title=_best_title(task_summary),
                error=task.get("error"),
            )
        )
    return rows


def _task_summary(task: dict[str, Any]) -> dict[str, Any] | None:
    task_dir = task.get("task_dir")
    if not task_dir or not (Path(task_dir) / "summary.json").is_file():
        return None
    return json.loads((Path(task_dir) / "summary.json").read_text())


def _best_title(task_summary: dict[str, Any] | None) -> str:
    if not task_summary or task_summary.get("best_node") is None:
        return ""
    tree_path = Path(task_summary["task_dir"]) / "tree.json"
    try:
        nodes = json.loads(tree_path.read_text())["tree"]["nodes"]
    except (OSError, KeyError, ValueError):
        return ""
    for node in nodes if isinstance(nodes, list) else nodes.values():
        if node.get("node_id") == task_summary["best_node"]:
            return str((node.get("plan") or {}).get("title", ""))[:70]
    return ""


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def side(comparison: dict[str, Any] | None) -> str:
    if not comparison:
        return "-"
    base, cand = comparison["baseline_ms"], comparison["candidate_ms"]
    mark = "" if comparison.get("beyond_iqr") else " (within IQR)"
    return (
        f"{comparison['speedup']:.2f}x: {base['median']:.2f}±{base['iqr']:.2f} → "
        f"{cand['median']:.2f}±{cand['iqr']:.2f} ms{mark}"
    )


def markdown(rows: list[Row], rounds: int) -> str:
    lines = [
        "| problem (scaled) | correct | generated | vs eager | vs torch.compile | best plan |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} ({row.changes}) | {'yes' if row.correct else 'no'} | "
            f"{', '.join(row.generated) or '-'} | {side(row.vs_eager)} | "
            f"{side(row.vs_compile)} | {row.best_title or (row.error or '')[:60]} |"
        )
    n = len(rows)
    correct = sum(r.correct for r in rows)
    cpp = sum(1 for r in rows if r.correct and "cpp" in r.generated)
    lines += [
        "",
        f"{n} problems, `--rounds {rounds}`, device cpu: correct {correct}/{n} "
        f"({correct / n:.0%}); best kernel contains generated C++ {cpp}/{n} ({cpp / n:.0%}); "
        f"geomean vs eager {geomean([r.eager_speedup() for r in rows]):.2f}x, "
        f"vs torch.compile {geomean([r.compile_speedup() for r in rows]):.2f}x "
        "(a problem without a correct kernel counts as 1.0x).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernelbench", type=Path, required=True)
    parser.add_argument("--tasks", type=Path, default=DEFAULT_TASKS)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-mb", type=float, default=48.0)
    parser.add_argument("--out", type=Path, default=REPO / ".kb" / "runs")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--only", nargs="*", help="problem file names to run (default: all)")
    args = parser.parse_args(argv)
    tasks = [
        line.strip()
        for line in args.tasks.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    if args.only:
        tasks = [t for t in tasks if any(Path(t).name.startswith(o) for o in args.only)]
    problems = prepare(args.kernelbench, tasks, args.budget_mb, REPO / ".kb" / "cpu")
    run_dir = run_batch(problems, args.rounds, args.seed, args.out)
    rows = rows_from(run_dir, problems)
    table = markdown(rows, args.rounds)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    if args.json:
        payload = {"run_dir": str(run_dir), "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
