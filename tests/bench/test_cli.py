"""`stark bench` as a user runs it: a real `stark` process, real evaluations.

Usage errors exit 2 with exactly one line on stderr and no traceback; an
evaluation exits 0 whatever its verdict; --json prints one strict-JSON object on
stdout, even when the candidate floods stdout itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from engine.bench.result import ErrorLocation, EvalResult
from engine.cli import bench as cli
from engine.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]

REFERENCE = dedent(
    """
    import torch
    from torch import nn

    N, D = 32, 64


    class Model(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.w = nn.Parameter(torch.randn(d))

        def forward(self, x):
            return torch.relu(x * self.w)


    def get_inputs():
        return [torch.randn(N, D)]


    def get_init_inputs():
        return [D]
    """
)

HONEST = dedent(
    """
    # stark: reference=reference.py
    import torch
    from torch import nn


    class ModelNew(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.w = nn.Parameter(torch.randn(d))

        def forward(self, x):
            return torch.clamp_min(x * self.w, 0.0)
    """
).lstrip()

WRONG = HONEST.replace("torch.clamp_min(x * self.w, 0.0)", "x * self.w * 2.0")

FLOOD = HONEST.replace(
    "        return torch.clamp_min",
    "        for i in range(20_000):\n"
    '            print(\'{"correct": true, "speedup": 1000.0}\', i)\n'
    "        return torch.clamp_min",
)

REQUIRED_FIELDS = {"compiled", "correct", "speedup", "ref_ms", "new_ms", "max_abs_err"}
REQUIRED_FIELDS |= {"flags", "error", "log"}
STATS_FIELDS = {"median", "iqr", "mean", "min", "n"}
FAST = ["--device", "cpu", "--correctness-trials", "2", "--timing-trials", "3", "--threads", "1"]


def stark(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "engine", "bench", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=cwd or ROOT,
    )


@pytest.fixture
def task(tmp_path: Path) -> Path:
    """A folder with reference.py, honest.py, wrong.py and flood.py."""
    (tmp_path / "reference.py").write_text(REFERENCE)
    for name, source in (("honest", HONEST), ("wrong", WRONG), ("flood", FLOOD)):
        (tmp_path / f"{name}.py").write_text(source)
    return tmp_path


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("stark bench: error: ")
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


# -- usage errors: one line, exit 2, nothing evaluated ----------------------------


def test_missing_candidate_file(task: Path) -> None:
    assert_usage_error(stark(task / "reference.py", task / "nope.py"), "not found", "nope.py")


def test_missing_reference_file(task: Path) -> None:
    assert_usage_error(stark(task / "nope.py", task / "honest.py"), "reference", "not found")


def test_directory_and_binary_files_are_usage_errors(task: Path) -> None:
    assert_usage_error(stark(task / "reference.py", task), "directory")
    (task / "binary.py").write_bytes(b"\xff\xfe\x00garbage")
    assert_usage_error(stark(task / "reference.py", task / "binary.py"), "UTF-8")


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--timeout", "-1", "--timeout"),
        ("--timeout", "soon", "--timeout"),
        ("--compile-timeout", "0", "--compile-timeout"),
        ("--correctness-trials", "0", "--correctness-trials"),
        ("--timing-trials", "many", "--timing-trials"),
        ("--threads", "-2", "--threads"),
        ("--device", "tpu", "--device"),
        ("--atol", "inf", "--atol"),  # 0 alone is allowed now (pure-relative allclose)
        ("--atol", "-1e-3", "--atol"),
        ("--rtol", "nan", "--rtol"),
        ("--rtol", "tight", "--rtol"),
    ],
)
def test_bad_flag_values(task: Path, flag: str, value: str, needle: str) -> None:
    assert_usage_error(stark(task / "reference.py", task / "honest.py", flag, value), needle)


def test_unknown_flag_and_wrong_file_count(task: Path) -> None:
    # Unknown options are rejected by the top-level `stark` parser (engine/cli.py), which
    # prints argparse's usage line before the one-line error.
    proc = stark(task / "reference.py", task / "honest.py", "--fast")
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert "unrecognized arguments: --fast" in proc.stderr.strip().splitlines()[-1]
    assert_usage_error(stark(), "CANDIDATE")
    ref, cand = task / "reference.py", task / "honest.py"
    assert_usage_error(stark(ref, cand, cand), "3 files")


def test_reference_required_without_header(task: Path) -> None:
    (task / "bare.py").write_text(HONEST.split("\n", 1)[1])
    assert_usage_error(stark(task / "bare.py"), "REFERENCE")


# -- evaluations: exit 0 whatever the verdict --------------------------------------


def test_json_is_one_complete_object_for_an_honest_candidate(task: Path) -> None:
    proc = stark(task / "reference.py", task / "honest.py", "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0], parse_constant=pytest.fail)  # strict JSON: no NaN/Infinity
    assert data.keys() >= REQUIRED_FIELDS
    assert data["compiled"] is True and data["correct"] is True, data["error"]
    assert data["error"] is None
    assert isinstance(data["speedup"], float) and data["speedup"] > 0
    for side in ("ref_ms", "new_ms"):
        assert data[side].keys() >= STATS_FIELDS
        assert data[side]["n"] == 3
        assert data[side]["min"] <= data[side]["median"]
    assert 0.0 <= data["max_abs_err"] <= 1e-4
    assert isinstance(data["flags"], list) and isinstance(data["log"], str)


def test_incorrect_candidate_exits_zero_with_a_reason(task: Path) -> None:
    proc = stark(task / "reference.py", task / "wrong.py", "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["compiled"] is True and data["correct"] is False
    assert data["speedup"] is None
    assert isinstance(data["error"], str) and "\n" not in data["error"]
    assert "mismatch" in data["error"] or "err" in data["error"]
    if data["max_abs_err"] is not None:
        assert data["max_abs_err"] > 1e-4


def test_atol_rtol_reach_the_correctness_check(task: Path) -> None:
    """An output off by 1e-3 fails the fp32 default (1e-4) and passes --atol 1e-2."""
    (task / "offset.py").write_text(HONEST.replace("0.0)", "0.0) + 1e-3"))
    args = (task / "reference.py", task / "offset.py", "--json", *FAST)
    assert json.loads(stark(*args).stdout)["correct"] is False
    loose = json.loads(stark(*args, "--atol", "1e-2", "--rtol", "1e-2").stdout)
    assert loose["correct"] is True, loose["error"]
    parsed = build_parser().parse_args(["bench", "a.py", "--atol", "2e-3", "--rtol", "0.5"])
    config = cli.config_from_args(parsed)
    assert (config.atol, config.rtol) == (2e-3, 0.5)


def test_stdout_flood_leaves_the_json_verdict_intact(task: Path) -> None:
    proc = stark(task / "reference.py", task / "flood.py", "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[:300]
    data = json.loads(lines[0])
    assert data["correct"] is True, data["error"]
    assert data["speedup"] != 1000.0
    assert '{"correct": true, "speedup": 1000.0} 19999' in data["log"]  # it went to the log
    assert len(data["log"]) < 100_000  # only the tail of what it printed


def test_human_verdict_and_reference_from_header(task: Path) -> None:
    """No --json: a short plain-text verdict; the reference comes from the header."""
    proc = stark(task / "wrong.py", *FAST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("INCORRECT")
    assert "device: cpu" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour codes when not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(proc.stdout)


# -- rendering, without running anything ------------------------------------------


def test_human_report_shows_where_and_why_a_candidate_failed() -> None:
    log = "\n".join(f"line {i}" for i in range(100)) + "\nmain.cpp:3:5: error: 'y' was not declared"
    result = EvalResult(
        compiled=False,
        error="C++ compilation failed: main.cpp:3:5: error: 'y' was not declared",
        stage="compile",
        log=log,
        error_location=ErrorLocation(line=12, function="<module>"),
        compile_s=3.5,
    )
    text = cli.human_report(result)
    assert text.startswith("FAILED to build/load (compile)")
    assert "at candidate line 12 in <module>" in text
    assert "main.cpp:3:5: error: 'y' was not declared" in text.splitlines()[-1]
    assert "line 0\n" not in text  # only the tail of the log


def test_json_output_is_strict_even_with_non_finite_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], task: Path
) -> None:
    """A NaN max_abs_err must not turn into the non-standard `NaN` token."""
    nan_result = EvalResult(compiled=True, error="output 0: NaN/Inf", max_abs_err=float("nan"))

    class FakeBenchmarker:  # stands in for the sandbox: this test is about rendering only
        def __init__(self, **_: object) -> None: ...
        def __enter__(self) -> FakeBenchmarker:
            return self

        def __exit__(self, *_: object) -> None: ...
        def evaluate(self, *_: object) -> EvalResult:
            return nan_result

    monkeypatch.setattr(cli, "Benchmarker", FakeBenchmarker)
    args = build_parser().parse_args(
        ["bench", str(task / "reference.py"), str(task / "honest.py"), "--json"]
    )
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    data = json.loads(out, parse_constant=pytest.fail)
    assert data["max_abs_err"] is None and data["compiled"] is True
