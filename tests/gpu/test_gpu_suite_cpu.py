"""benchmarks/gpu_suite.py on a machine without a GPU: what CI can check of the GPU run.

- `--device cpu --dry-run` runs end to end, says "skipped: no CUDA" for every CUDA
  row, proves the plumbing with one real CPU evaluation, writes its JSON and prints
  the table last;
- bad arguments are usage errors (exit 2) with one clear line;
- the KernelBench helpers copy problems from a checkout or a bare git snapshot,
  spot imports beyond torch, and write torch.compile baselines;
- the KernelBench section drives the real `stark batch` (offline agent, on CPU, with
  a tiny problem in KernelBench's format) and reads its summary back;
- reports from separate runs (batch on one device call, torch.compile baselines on
  another) merge into one table with the vs-torch.compile figures.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "benchmarks" / "gpu_suite.py"

TINY_LEVEL1 = """import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super(Model, self).__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


batch_size = 64
dim = 256


def get_inputs():
    x = torch.rand(batch_size, dim)
    return [x]


def get_init_inputs():
    return []
"""

TINY_LEVEL2 = """import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, in_features, out_features):
        super(Model, self).__init__()
        self.gemm = nn.Linear(in_features, out_features)

    def forward(self, x):
        return torch.relu(self.gemm(x) * 0.5)


batch_size = 32
in_features = 64
out_features = 64


def get_inputs():
    return [torch.rand(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features]
"""


def load_suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("stark_gpu_suite_under_test", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    return load_suite()


def run_suite(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SUITE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def test_dry_run_on_cpu_skips_cuda_rows_and_prints_table_last(tmp_path: Path) -> None:
    out = tmp_path / "dry.json"
    proc = run_suite("--device", "cpu", "--dry-run", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    by_section: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    for section in ("cuda", "triton", "faults", "defences", "dobench", "spread"):
        assert by_section[section], section
        assert all(r["status"] == "skipped: no CUDA" for r in by_section[section]), section
    smoke = next(r for r in rows if r["check"].startswith("harness smoke"))
    assert smoke["status"] == "ok", smoke
    assert report["data"]["cpu_smoke"]["correct"] is True
    assert not any(r["status"] == "FAIL" for r in rows)
    lines = [line for line in proc.stdout.strip().splitlines() if line.strip()]
    assert "STARK GPU suite" in proc.stdout
    assert lines[-1].startswith("results written to")
    assert "skipped" in lines[-2] and "failed" in lines[-2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sections", "cuda,bogus"], "unknown section"),
        (["--kb-levels", "one"], "levels look like"),
        (["--kb-parts", "everything"], "--kb-parts"),
        (["--kb-rounds", "0"], "--kb-rounds"),
        (["--report", "/nonexistent/report.json"], "no such report"),
        (["--copy-only"], "--copy-only needs --kernelbench"),
        (["--kernelbench", "/nonexistent/kb"], "no such directory"),
    ],
)
def test_usage_errors_exit_2(
    suite: ModuleType, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        suite.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_default_sections_and_parsing(suite: ModuleType) -> None:
    args = suite.build_parser().parse_args([])
    assert "kernelbench" not in args.sections and "cuda" in args.sections
    assert suite.parse_sections("all") == list(suite.SECTIONS)
    assert suite.parse_levels("level1,level2") == ["level1", "level2"]


def test_task_list_names_8_level1_and_4_level2_problems(suite: ModuleType) -> None:
    kb = sys.modules["gpu_kernelbench"]
    tasks = kb.read_task_list()
    levels = [kb.level_of(t) for t in tasks]
    assert levels.count("level1") >= 8 and levels.count("level2") >= 4
    assert all(t.startswith("KernelBench/level") and t.endswith(".py") for t in tasks)


def make_snapshot(root: Path) -> tuple[Path, Path]:
    """A tiny KernelBench-shaped checkout and a task list naming its two problems."""
    (root / "KernelBench" / "level1").mkdir(parents=True)
    (root / "KernelBench" / "level2").mkdir(parents=True)
    (root / "KernelBench" / "level1" / "1_TinyReLU.py").write_text(TINY_LEVEL1)
    (root / "KernelBench" / "level2" / "1_TinyGemm_Scale_ReLU.py").write_text(TINY_LEVEL2)
    tasks = root / "tasks.txt"
    tasks.write_text(
        "# two tiny problems\nKernelBench/level1/1_TinyReLU.py\n"
        "KernelBench/level2/1_TinyGemm_Scale_ReLU.py\n"
    )
    return root, tasks


def test_copy_tasks_from_checkout_and_bare_git(suite: ModuleType, tmp_path: Path) -> None:
    kb = sys.modules["gpu_kernelbench"]
    checkout, tasks_file = make_snapshot(tmp_path / "checkout")
    tasks = kb.read_task_list(tasks_file)
    copied = kb.copy_tasks(checkout, tmp_path / "kb1", tasks)
    assert [p.parent.name for p in copied] == ["level1", "level2"]
    assert copied[0].read_text() == TINY_LEVEL1

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(checkout)], check=True)
    subprocess.run([*git, "-C", str(checkout), "add", "KernelBench"], check=True)
    subprocess.run([*git, "-C", str(checkout), "commit", "-qm", "x"], check=True)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(checkout), str(bare)], check=True)
    from_git = kb.copy_tasks(bare, tmp_path / "kb2", tasks)
    assert [p.read_text() for p in from_git] == [TINY_LEVEL1, TINY_LEVEL2]

    with pytest.raises(FileNotFoundError, match="9_Missing.py"):
        kb.copy_tasks(bare, tmp_path / "kb3", ["KernelBench/level1/9_Missing.py"])


def test_import_check_and_compile_baseline(suite: ModuleType) -> None:
    kb = sys.modules["gpu_kernelbench"]
    assert kb.extra_imports(TINY_LEVEL1) == []
    assert kb.extra_imports("import math\nimport numpy as np\nfrom scipy import x\n") == [
        "numpy",
        "scipy",
    ]
    baseline = kb.compile_baseline_source(TINY_LEVEL2)
    tree = ast.parse(baseline)
    model_new = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModelNew")
    assert [ast.unparse(b) for b in model_new.bases] == ["Model"]
    assert "torch.compile" in baseline
    with pytest.raises(ValueError, match="no top-level Model"):
        kb.compile_baseline_source("import torch\n")


def test_kernelbench_section_runs_stark_batch_on_cpu(tmp_path: Path) -> None:
    snapshot, tasks_file = make_snapshot(tmp_path / "snap")
    out = tmp_path / "kb.json"
    proc = run_suite(
        "--device", "cpu", "--quick", "--sections", "env,kernelbench",
        "--kernelbench", str(snapshot), "--kb-tasks", str(tasks_file),
        "--kb-dir", str(tmp_path / ".kb"), "--kb-levels", "level2", "--kb-parts", "batch,compile",
        "--kb-rounds", "2",  # round 0 is the seed (the reference itself: never the best)
        "--kb-out", str(tmp_path / "runs"), "--json", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    tasks = report["data"]["kernelbench"]["tasks"]
    assert set(tasks) == {"1_TinyGemm_Scale_ReLU.py"}  # --kb-levels level2 left out level1
    for task in tasks.values():
        assert task["search_correct"] is True, task
        assert "class ModelNew" in task["best_kernel_source"]
        # Fresh evaluations, each with both sides' median and IQR from one run.
        for name in ("stark_vs_eager", "compile_vs_eager", "stark_vs_compile"):
            measured = task[name]
            assert measured["correct"] is True, (name, measured)
            assert measured["speedup"] > 0 and measured["baseline_ms"] > 0, (name, measured)
            assert measured["candidate_ms"] > 0 and measured["baseline_iqr_ms"] >= 0
    figures = report["data"]["kernelbench"]["aggregate"]
    assert figures["tasks"] == 1 and figures["correct"] == 1 and figures["compile_correct"] == 1
    assert figures["geomean_vs_compile"] is not None
    assert (tmp_path / ".kb" / "level2" / "1_TinyGemm_Scale_ReLU.py").is_file()
    batch = report["data"]["kernelbench_batch"]
    assert "--agent" in batch["command"] and "offline" in batch["command"]
    table = proc.stdout[proc.stdout.rindex("STARK GPU suite") :]
    assert "1_TinyGemm_Scale_ReLU.py" in table and "±" in table


def test_compiled_reference_makes_torch_compile_the_baseline(suite: ModuleType) -> None:
    kb = sys.modules["gpu_kernelbench"]
    from engine.artifacts import remeasured
    from engine.search import remeasure

    # one implementation: the suite counts wins the way `stark optimize`/`batch` do
    assert kb.compiled_reference_source is remeasure.compiled_reference_source
    assert kb.compile_baseline_source is remeasure.compile_baseline_source
    assert kb.geomean is remeasured.geomean
    namespace: dict[str, object] = {}
    exec(compile(kb.compiled_reference_source(TINY_LEVEL2), "ref.py", "exec"), namespace)
    model_class = namespace["Model"]
    assert model_class.__name__ == "Model"  # KernelBench's super(Model, self) still works
    model = model_class(*namespace["get_init_inputs"]())  # type: ignore[operator]
    assert "forward" in vars(model), "the instance's forward should be the compiled one"
    assert type(model).forward is not vars(model)["forward"]


def comparison(speedup: float | None, base: float = 10.0, iqr: float = 0.2) -> dict[str, object]:
    if speedup is None:
        return {"correct": False, "error": "rejected (correctness): mismatch"}
    return {
        "correct": True,
        "speedup": speedup,
        "baseline_ms": base,
        "baseline_iqr_ms": iqr,
        "candidate_ms": base / speedup,
        "candidate_iqr_ms": iqr,
    }


def write_report(path: Path, rows: list[dict[str, str]], data: dict[str, object]) -> Path:
    path.write_text(json.dumps({"suite": "stark-gpu-suite", "rows": rows, "data": data}))
    return path


def test_reports_from_separate_runs_merge(suite: ModuleType, tmp_path: Path) -> None:
    env = {"name": "NVIDIA H100 80GB HBM3", "capability": "9.0"}
    core = write_report(
        tmp_path / "core.json",
        [{"section": "cuda", "check": "speedup", "status": "ok", "value": "3.1x"}],
        {"env": env},
    )
    batch = write_report(
        tmp_path / "batch.json",
        [{"section": "kernelbench", "check": "stark batch", "status": "ok", "value": "2 tasks"}],
        {
            "kernelbench": {
                "tasks": {
                    "a.py": {
                        "task": "a.py",
                        "level": "level1",
                        "search_correct": True,
                        "search_speedup": 2.3,
                        "stark_vs_eager": comparison(2.0),
                    },
                    "b.py": {
                        "task": "b.py",
                        "level": "level2",
                        "search_correct": False,
                        "error": "no correct node",
                    },
                }  # fmt: skip
            }
        },
    )
    compiled = write_report(
        tmp_path / "compile.json",
        [],
        {
            "kernelbench": {
                "tasks": {
                    "a.py": {
                        "task": "a.py",
                        "level": "level1",
                        "compile_vs_eager": comparison(1.6),
                        "stark_vs_compile": comparison(1.01, iqr=0.5),
                    },
                    "b.py": {
                        "task": "b.py",
                        "level": "level2",
                        "compile_vs_eager": comparison(1.2),
                    },
                }  # fmt: skip
            }
        },
    )
    rows, data = suite.merge_reports([core, batch, compiled])
    figures = data["kernelbench"]["aggregate"]
    assert figures["tasks"] == 2 and figures["correct"] == 1
    assert figures["fast_1_vs_eager"] == 0.5 and figures["wins_beyond_iqr_vs_eager"] == 1
    # Against torch.compile, the direct measurement counts, not 2.0 / 1.6 of two runs.
    assert figures["geomean_vs_compile"] == pytest.approx(1.01)
    assert figures["fast_1_vs_compile"] == 0.5  # KernelBench's fast_1 ...
    assert figures["wins_beyond_iqr_vs_compile"] == 0  # ... but within noise
    assert figures["compile_correct"] == 2
    assert figures["compile_geomean_vs_eager"] == pytest.approx((1.6 * 1.2) ** 0.5)
    merged_a = data["kernelbench"]["tasks"]["a.py"]
    assert merged_a["search_speedup"] == 2.3 and merged_a["stark_vs_eager"]["speedup"] == 2.0
    checks = {(r.section, r.check) for r in rows}
    assert ("cuda", "speedup") in checks and ("kernelbench", "stark batch") in checks
    assert data["env"]["name"].startswith("NVIDIA H100")

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not a gpu_suite"):
        suite.merge_reports([other])
