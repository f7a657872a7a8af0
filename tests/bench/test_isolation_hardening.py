"""Regression tests for the isolation defects a review found: secrets in the candidate's
environment, deadlines reset through a forged phase file, a speedup forged in the worker's
memory, and a poisoned compile cache."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.bench import Benchmarker, EvalConfig
from engine.bench.cache_manifest import MANIFEST_FILE, CacheManifest
from engine.bench.environment import scrubbed_environment
from engine.bench.evaluate import trusted_speedup
from engine.bench.result import EvalResult, TimingStats
from engine.bench.sandbox import wall_limit_s
from engine.bench.signed_files import (
    CACHE_BUILDS_FILE,
    authentic_phase,
    result_mac,
    run_phase_token,
    sha256_file,
)
from engine.cli.bench import human_report
from tests.bench.conftest import candidate, ref

FAKE_OPENAI_KEY = "sk-proj-" + "Zq8RxT3mW7vKp2Lc9NfHd4Yb"
FAKE_STARK_KEY = "stark-test-" + "4f9a1c7e2b8d"


# -- 1. secrets never reach candidate code --------------------------------------------------
def test_scrubbed_environment_drops_secrets_and_keeps_the_toolchain() -> None:
    env = scrubbed_environment(
        {
            "OPENAI_API_KEY": FAKE_OPENAI_KEY,
            "STARK_API_KEY": FAKE_STARK_KEY,
            "GITHUB_TOKEN": "ghp_whatever",
            "db_password": "hunter22",
            "AWS_SECRET_ACCESS_KEY": "x" * 40,
            "MY_CREDENTIALS_FILE": "/tmp/creds",
            "HTTP_AUTH": "basic abc",
            "INNOCENT_NAME": FAKE_OPENAI_KEY,  # caught by the value, not the name
            "PATH": "/usr/bin:/bin",
            "HOME": "/home/me",
            "CXX": "g++",
            "CUDA_HOME": "/usr/local/cuda",
            "TORCH_CUDA_ARCH_LIST": "8.0",
            "LD_LIBRARY_PATH": "/opt/lib",
            "STARK_CACHE_DIR": "/tmp/cache",
            "OMP_NUM_THREADS": "2",
            "TRITON_CACHE_DIR": "/tmp/triton",
        }
    )
    for secret in (
        "OPENAI_API_KEY",
        "STARK_API_KEY",
        "GITHUB_TOKEN",
        "db_password",
        "AWS_SECRET_ACCESS_KEY",
        "MY_CREDENTIALS_FILE",
        "HTTP_AUTH",
        "INNOCENT_NAME",
    ):
        assert secret not in env
    for kept in ("PATH", "HOME", "CXX", "CUDA_HOME", "TORCH_CUDA_ARCH_LIST", "LD_LIBRARY_PATH"):
        assert kept in env
    assert env["STARK_CACHE_DIR"] == "/tmp/cache" and env["OMP_NUM_THREADS"] == "2"
    assert env["TORCHINDUCTOR_COMPILE_THREADS"] == "1"
    chosen = scrubbed_environment({"TORCHINDUCTOR_COMPILE_THREADS": "4"})
    assert chosen["TORCHINDUCTOR_COMPILE_THREADS"] == "4"  # the user's choice stands


def _dumpable_after_hiding(env: dict[str, str]) -> str:
    """Run hide_own_environment() in a fresh process started with `env`; PR_GET_DUMPABLE."""
    script = (
        "import ctypes; from engine.bench.environment import hide_own_environment; "
        "hide_own_environment(); print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"
    )
    root = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": root, **env},
    ).stdout.strip()


def test_a_parent_holding_a_key_hides_its_proc_environ() -> None:
    """Candidates can read /proc/<ancestor>/environ (the initial block, even after os.environ
    is scrubbed) unless the ancestor is non-dumpable. (As root, as in CI, root reads it
    anyway; on a user's machine this is what keeps the key away.)"""
    assert _dumpable_after_hiding({"OPENAI_API_KEY": FAKE_OPENAI_KEY}) == "0"
    assert _dumpable_after_hiding({}) == "1"


@pytest.fixture(scope="module")
def own_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Benchmarker]:
    """A Benchmarker with its own cache, whose fork server starts while API keys are set."""
    cache = tmp_path_factory.mktemp("iso-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENAI_API_KEY", FAKE_OPENAI_KEY)
        patch.setenv("STARK_API_KEY", FAKE_STARK_KEY)
        bench = Benchmarker(cache_dir=cache)
        bench.warm_up()
    try:
        yield bench
    finally:
        bench.close()


def test_api_key_does_not_reach_the_candidate(
    own_bench: Benchmarker, fast_config: EvalConfig
) -> None:
    result = own_bench.evaluate(ref("scale_add"), candidate("iso_print_env"), fast_config)
    assert result.correct, result.summary() + result.log[-2000:]
    assert "PATH=" in result.log  # the candidate did print its environment
    assert FAKE_OPENAI_KEY not in result.log and "OPENAI_API_KEY" not in result.log
    assert FAKE_STARK_KEY not in result.log and "STARK_API_KEY" not in result.log
    assert "TORCHINDUCTOR_COMPILE_THREADS=1" in result.log


# -- 2. the phase file cannot buy time ------------------------------------------------------
def test_only_signed_forward_phases_are_authentic() -> None:
    nonce = uuid.uuid4().hex
    assert authentic_phase(["compile"], nonce) == "compile"
    assert authentic_phase(["run", run_phase_token(nonce, "run")], nonce) == "run"
    assert authentic_phase(["warmup", run_phase_token(nonce, "warmup")], nonce) == "warmup"
    assert authentic_phase(["run", "x"], nonce) is None
    assert authentic_phase(["run"], nonce) is None
    assert authentic_phase(["run", run_phase_token(nonce, "warmup")], nonce) is None
    assert authentic_phase(["run", run_phase_token("other", "run")], nonce) is None
    assert wall_limit_s(10.0, 5.0) < 10.0 + 10.0 + 5.0 + 60.0


@pytest.mark.timeout(120)
def test_phase_file_toggling_does_not_reset_the_deadline(
    evaluate_files, fast_config: EvalConfig
) -> None:
    compile_s, run_s = 8.0, 3.0
    result = evaluate_files(
        "scale_add", "iso_phase_toggle", compile_timeout_s=compile_s, run_timeout_s=run_s
    )
    assert result.stage == "timeout", result.summary() + result.log[-2000:]
    assert not result.correct and result.compiled
    # Killed under the ordinary deadlines, never later (with resets it would never end).
    assert result.total_s is not None and result.total_s < compile_s + compile_s + run_s
    after = evaluate_files("scale_add", "honest")
    assert after.correct, after.summary()


# -- 3. the speedup is the parent's arithmetic, not the worker's word -------------------------
def _stats(median: float) -> TimingStats:
    return TimingStats(median=median, iqr=0.0, mean=median, min=median, n=30)


def test_trusted_speedup_is_recomputed_from_the_timings() -> None:
    forged = EvalResult(correct=True, speedup=4.2, ref_ms=_stats(2.0), new_ms=_stats(1.0))
    assert trusted_speedup(forged) == pytest.approx(2.0)
    side = EvalResult(
        correct=True,
        ref_ms=_stats(2.0),
        new_ms=_stats(0.5),
        host_ms=_stats(4.0),
        flags=["side_stream_suspected"],
    )
    assert trusted_speedup(side) == pytest.approx(0.5)
    assert trusted_speedup(EvalResult(speedup=3.0)) is None


def test_speedup_forged_in_worker_memory_is_not_reported(evaluate_files) -> None:
    result = evaluate_files("scale_add", "iso_speedup_gc")
    assert result.speedup != 4.2
    if result.speedup is not None:
        assert result.ref_ms is not None and result.new_ms is not None
        assert result.speedup == pytest.approx(result.ref_ms.median / result.new_ms.median)


def test_candidate_reaching_the_harness_gets_no_speedup(evaluate_files) -> None:
    result = evaluate_files("scale_add", "iso_speedup_frames")
    assert "reads_harness_files" in result.flags
    assert result.speedup is None
    if result.correct:  # the correctness verdict itself is not changed by this flag
        assert "untrusted_timing" in result.flags
        assert "speedup withheld" in human_report(result)


# -- 4. a poisoned compile cache is detected and rebuilt ------------------------------------
def test_forged_cache_report_is_rejected(tmp_path: Path) -> None:
    manifest = CacheManifest(tmp_path / "cache")
    token = manifest.guard(tmp_path)
    key = "ab" * 32
    library = tmp_path / "cache" / "ext" / key[:16] / "evil.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"\x7fELF evil")
    body = {"builds": [{"key": key, "module": "evil", "sha256": sha256_file(library)}]}
    body["tampered"] = []
    report = tmp_path / CACHE_BUILDS_FILE
    report.write_text(json.dumps({**body, "mac": result_mac("guessed", body)}))
    assert manifest.settle(tmp_path, token)  # a problem is reported ...
    assert key not in manifest.hashes  # ... and nothing is learnt from it
    report.write_text(json.dumps({**body, "mac": result_mac(token, body)}))
    assert manifest.settle(tmp_path, token) == []
    assert manifest.hashes[key] == sha256_file(library)
    assert CacheManifest(tmp_path / "cache").hashes == manifest.hashes  # persisted
    library.write_bytes(b"\x7fELF changed later")
    report.unlink()
    assert any("overwritten" in line for line in manifest.settle(tmp_path, token))
    assert manifest.settle(tmp_path, token) == []  # reported once, rebuilt on next use


@pytest.mark.timeout(300)
def test_poisoned_cache_is_rebuilt_and_flagged(
    own_bench: Benchmarker, fast_config: EvalConfig
) -> None:
    honest = candidate("cpp_ctypes_a").replace(
        "#include <cstdint>", f"#include <cstdint> // {uuid.uuid4().hex}"
    )
    ext = own_bench.cache_dir / "ext"
    first = own_bench.evaluate(ref("scale_add"), honest, fast_config)
    assert first.correct, first.summary() + first.log[-3000:]
    (library,) = ext.glob("*/*.so")
    good = sha256_file(library)
    assert good in own_bench.cache_manifest.hashes.values()

    poisoner = own_bench.evaluate(ref("scale_add"), candidate("iso_cache_poisoner"), fast_config)
    assert "poisoned 1 cached libraries" in poisoner.log
    assert "cache_tampered" in poisoner.flags  # caught in the act
    assert sha256_file(library) != good

    again = own_bench.evaluate(ref("scale_add"), honest, fast_config)
    assert again.correct, again.summary() + again.log[-3000:]
    assert "cache_tampered" in again.flags
    assert "c++" in again.log  # really rebuilt, not loaded
    assert sha256_file(library) in own_bench.cache_manifest.hashes.values()
    persisted = json.loads((own_bench.cache_dir / MANIFEST_FILE).read_text())
    assert sha256_file(library) in persisted["so_sha256"].values()

    clean = own_bench.evaluate(ref("scale_add"), honest, fast_config)
    assert clean.correct and "cache_tampered" not in clean.flags
    assert "c++" not in clean.log  # a trusted hit again


# -- 5. the CLI's JSON and help ---------------------------------------------------------------
def test_cli_help_states_the_timing_defaults() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    defaults = EvalConfig()
    flat = " ".join(out.split())
    assert f"IQR/median < {defaults.noise_target:g}" in flat
    assert f"at least {defaults.min_timing_trials}" in flat
