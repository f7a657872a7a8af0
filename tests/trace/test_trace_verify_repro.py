"""A generated verify_{op}.py, run as its own process, reproduces the recorded verdict.

The verdicts are real: the benchmarker evaluates a tiny reference against an
honest candidate, a wrong one and one that does not compile.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench import Benchmarker, EvalConfig, EvalResult
from engine.trace import Trace
from engine.trace.verify_script import detect_impl_type
from engine.trace.versions import environment_versions

REFERENCE = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0


def get_inputs():
    return [torch.randn(32, 32)]


def get_init_inputs():
    return []
"""

HONEST = """
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0.0) * 2.0
"""

WRONG = HONEST.replace("x.clamp_min(0.0) * 2.0", "x * 2.0")
BROKEN = HONEST.replace("def forward(self, x", "def forward(self, x:::")

CONFIG = EvalConfig(
    device="auto",
    correctness_trials=2,
    timing_trials=3,
    warmup_s=0.0,
    timing_budget_s=0.2,
    compile_timeout_s=120,
    run_timeout_s=60,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stark-cache")


@pytest.fixture(scope="module")
def verdicts(cache_dir: Path) -> Iterator[dict[str, EvalResult]]:
    with Benchmarker(cache_dir=cache_dir) as bench:
        yield {
            name: bench.evaluate(REFERENCE, src, CONFIG)
            for name, src in (("honest", HONEST), ("wrong", WRONG), ("broken", BROKEN))
        }


def _record(tmp_path: Path, candidate: str, verdict: EvalResult) -> Path:
    trace = Trace("relu2", "T1", tmp_path / "trace")
    step = trace.insert_tester_record(
        verdict.to_json(),
        verdict.log,
        "",
        reference_src=REFERENCE,
        candidate_src=candidate,
        eval_config=CONFIG,
    )
    return tmp_path / "trace" / "relu2" / f"IT1_S{step:02d}_verify" / "verify_relu2.py"


def _run(script: Path, cache_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STARK_CACHE_DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,  # not the script's folder: it must find its sibling files itself
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.parametrize("name", ["honest", "wrong", "broken"])
def test_verify_script_reproduces_the_recorded_verdict(
    tmp_path: Path, cache_dir: Path, verdicts: dict[str, EvalResult], name: str
) -> None:
    verdict = verdicts[name]
    expected = {"honest": (True, True), "wrong": (True, False), "broken": (False, False)}[name]
    assert (verdict.compiled, verdict.correct) == expected, verdict.summary()
    candidate = {"honest": HONEST, "wrong": WRONG, "broken": BROKEN}[name]
    script = _record(tmp_path, candidate, verdict)
    proc = _run(script, cache_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    rerun = EvalResult.from_json(proc.stdout)
    assert (rerun.compiled, rerun.correct) == expected
    assert rerun.candidate_sha256 == verdict.candidate_sha256
    assert "REPRODUCED" in proc.stderr
    assert "versions recorded: stark " in proc.stderr and "versions now:      stark " in proc.stderr
    assert "versions differ" not in proc.stderr


def test_verify_script_warns_when_versions_differ(
    tmp_path: Path, cache_dir: Path, verdicts: dict[str, EvalResult]
) -> None:
    script = _record(tmp_path, HONEST, verdicts["honest"])
    torch_now = environment_versions()["torch"]
    text = script.read_text()
    assert f'"torch": "{torch_now}"' in text
    script.write_text(text.replace(f'"torch": "{torch_now}"', '"torch": "1.0.0-recorded"'))
    proc = _run(script, cache_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr  # the verdict itself still reproduces
    assert "torch 1.0.0-recorded" in proc.stderr and f"torch {torch_now}" in proc.stderr
    assert (
        f"warning: versions differ from the recording (torch: 1.0.0-recorded -> {torch_now})"
        in (proc.stderr)
    )


def test_verify_script_detects_a_false_record(
    tmp_path: Path, cache_dir: Path, verdicts: dict[str, EvalResult]
) -> None:
    forged = EvalResult.from_dict({**verdicts["wrong"].to_dict(), "correct": True, "speedup": 9.9})
    script = _record(tmp_path, WRONG, forged)
    proc = _run(script, cache_dir, tmp_path)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["correct"] is False
    assert "NOT REPRODUCED" in proc.stderr


def test_verify_script_pins_auto_device_to_the_recorded_one(
    tmp_path: Path, verdicts: dict[str, EvalResult]
) -> None:
    script = _record(tmp_path, HONEST, verdicts["honest"])
    namespace = runpy.run_path(str(script), run_name="not_main")  # loads, does not run
    recorded_device = verdicts["honest"].device
    assert namespace["EVAL_CONFIG"]["device"] == ("cuda" if "cuda" in recorded_device else "cpu")
    assert namespace["EVAL_CONFIG"]["correctness_trials"] == CONFIG.correctness_trials
    assert namespace["RECORDED"]["correct"] is True


@pytest.mark.parametrize(
    ("source", "impl"),
    [
        ('load_inline(name="k", cpp_sources=CPP, cuda_sources=CUDA)', "cuda"),
        ('load_inline("k", CPP, CUDA)', "cuda"),
        ('load_inline(name="k", cpp_sources=CPP, cuda_sources=None)', "cpp"),
        ('load_inline(name="k", cpp_sources=CPP, cuda_sources=[])', "cpp"),
        ("import triton\n@triton.jit\ndef kernel(x):\n    pass\n", "triton"),
        ("import torch\n# we could use load_inline(cuda_sources=...) or @triton.jit\n", "torch"),
        ("x = (  # does not parse\nload_inline(cuda_sources=SRC", "cuda"),
        ("@triton.jit\ndef k(:\n", "triton"),
    ],
)
def test_impl_type_detection(source: str, impl: str) -> None:
    assert detect_impl_type(source) == impl


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "impl"),
    [
        ("elementwise_chain_cpp.py", "cpp"),
        ("elementwise_chain_cuda.py", "cuda"),
        ("row_softmax_triton.py", "triton"),
    ],
)
def test_impl_type_of_the_example_candidates(name: str, impl: str) -> None:
    path = EXAMPLES / "candidates" / name
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    assert detect_impl_type(path.read_text()) == impl


@pytest.mark.gpu
def test_verify_script_reproduces_a_cuda_verdict(tmp_path: Path, cache_dir: Path) -> None:
    if not Path("/dev/nvidiactl").exists():  # cheap check before importing torch
        pytest.skip("needs a CUDA device")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    reference = (EXAMPLES / "elementwise_chain.py").read_text()
    candidate = (EXAMPLES / "candidates" / "elementwise_chain_cuda.py").read_text()
    config = EvalConfig(device="cuda", correctness_trials=2, timing_trials=5)
    with Benchmarker(cache_dir=cache_dir) as bench:
        verdict = bench.evaluate(reference, candidate, config)
    trace = Trace("elementwise_chain", "G1", tmp_path / "trace")
    step = trace.insert_tester_record(
        verdict.to_json(),
        verdict.log,
        "",
        reference_src=reference,
        candidate_src=candidate,
        eval_config=config,
    )
    verify_dir = tmp_path / "trace" / "elementwise_chain" / f"IG1_S{step:02d}_verify"
    assert (verify_dir / "elementwise_chain_cuda.py").is_file()
    proc = _run(verify_dir / "verify_elementwise_chain.py", cache_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert EvalResult.from_json(proc.stdout).correct == verdict.correct
