"""Faults of issue 2: each gives the right verdict with a clear error, and the SAME
Benchmarker then still passes an honest candidate (its fork server survives)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from engine.bench import Benchmarker, EvalConfig

pytestmark = pytest.mark.timeout(180)


def _torch_has_cuda() -> bool:
    """Without initialising CUDA in the test process (only workers may)."""
    import torch

    return torch.version.cuda is not None


def processes_mentioning(marker: str) -> list[str]:
    """Command lines of live processes that contain `marker` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def wait_until_gone(marker: str, within_s: float = 5.0) -> list[str]:
    deadline = time.monotonic() + within_s
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def worker_children(benchmarker: Benchmarker) -> list[int]:
    """Processes whose parent is the fork server: a finished evaluation must leave none."""
    proc = benchmarker.sandbox._proc
    assert proc is not None
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == proc.pid:
                children.append(int(entry.name))
    return children


@pytest.fixture
def assert_still_works(evaluate_files, benchmarker: Benchmarker):  # noqa: ANN201
    """After a fault: no worker left behind, and an honest candidate still passes."""

    def check() -> None:
        deadline = time.monotonic() + 5
        while worker_children(benchmarker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker_children(benchmarker) == []
        result = evaluate_files("scale_add", "honest")
        assert result.correct, result.summary()

    return check


def test_segfault_in_forward(evaluate_files, assert_still_works) -> None:
    result = evaluate_files("scale_add", "segfault")
    assert (result.compiled, result.correct, result.stage) == (True, False, "crash")
    assert "SIGSEGV" in result.error and "segmentation fault" in result.error
    assert result.error_location is not None and result.error_location.function == "forward"
    assert "Segmentation fault" in result.log  # faulthandler's stack dump
    assert_still_works()


def test_abort_in_forward(evaluate_files, assert_still_works) -> None:
    result = evaluate_files("scale_add", "abort")
    assert (result.correct, result.stage) == (False, "crash")
    assert "SIGABRT" in result.error
    assert_still_works()


def test_silent_exit_in_forward_does_not_pass(evaluate_files, assert_still_works) -> None:
    result = evaluate_files("scale_add", "exit_in_forward")
    assert (result.correct, result.stage) == (False, "crash")
    assert "exited with status 0" in result.error and "without reporting a result" in result.error
    assert_still_works()


def test_sys_exit_at_import(evaluate_files, assert_still_works) -> None:
    result = evaluate_files("scale_add", "sys_exit_import")
    assert (result.compiled, result.correct, result.stage) == (False, False, "import")
    assert result.error == "candidate called sys.exit(3) at import"
    assert result.error_location is not None and result.error_location.line == 8
    assert_still_works()


def test_endless_loop_times_out_and_the_group_is_killed(
    benchmarker: Benchmarker, fast_config: EvalConfig, sources, assert_still_works
) -> None:
    ref, candidate = sources
    marker = f"stark-hang-{uuid.uuid4().hex}"
    source = candidate("endless_loop").replace("MARKER", marker)
    # The endless forward starts on the harness's first (warm-up) call, which runs under the
    # compile deadline, since JIT compilation on first use (torch.compile, Triton) happens there.
    fast_config.compile_timeout_s = 3.0
    result = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert (result.compiled, result.correct, result.stage) == (True, False, "timeout")
    assert "warm-up) timed out after 3s" in result.error
    assert "process group killed" in result.error
    # faulthandler dumped the stack just before the deadline: we know where it hung.
    assert result.error_location is not None and result.error_location.function == "forward"
    assert wait_until_gone(marker) == []  # the helper in the worker's group died with it
    assert_still_works()


def test_hang_after_the_first_call_hits_the_run_deadline(
    benchmarker: Benchmarker, fast_config: EvalConfig, sources, assert_still_works
) -> None:
    ref, candidate = sources
    fast_config.run_timeout_s = 3.0
    result = benchmarker.evaluate(
        ref("scale_add"), candidate("endless_after_first_call"), fast_config
    )
    assert (result.compiled, result.correct, result.stage) == (True, False, "timeout")
    assert "correctness timed out after 3s" in result.error
    assert "process group killed" in result.error and "--timeout" in result.error
    assert result.error_location is not None and result.error_location.function == "forward"
    assert_still_works()


def test_impossible_allocation(evaluate_files, assert_still_works) -> None:
    result = evaluate_files("scale_add", "huge_alloc")
    assert (result.compiled, result.correct, result.stage) == (True, False, "runtime")
    assert "can't allocate memory" in result.error
    assert result.error_location is not None and result.error_location.function == "forward"
    assert_still_works()


def test_allocation_beyond_the_memory_limit(evaluate_files, assert_still_works) -> None:
    result = evaluate_files("scale_add", "big_alloc", memory_limit_gb=2.0)
    assert (result.correct, result.stage) == (False, "runtime")
    assert "can't allocate memory" in result.error
    assert_still_works()


def test_stdout_flood_keeps_the_verdict_intact(evaluate_files, assert_still_works) -> None:
    result = evaluate_files("scale_add", "stdout_flood")
    assert result.correct, result.summary()
    assert result.log.startswith("[... ") and "truncated" in result.log.splitlines()[0]
    assert len(result.log) < 40_000
    assert_still_works()


def test_cpp_compile_error_reports_compiler_file_and_line(
    evaluate_files, assert_still_works
) -> None:
    result = evaluate_files("scale_add", "compile_error")
    assert (result.compiled, result.correct, result.stage) == (False, False, "compile")
    assert result.error.startswith("C++ compilation failed: main.cpp:3:")
    assert "undeclared_name_xyz" in result.error and "\n" not in result.error
    assert "main.cpp:3:41: error:" in result.log  # the compiler's own text, intact
    assert result.error_location is not None and result.error_location.line == 12
    assert_still_works()


def test_build_failing_in_model_init_is_a_compile_verdict(
    evaluate_files, assert_still_works
) -> None:
    result = evaluate_files("scale_add", "compile_error_in_init")
    assert (result.compiled, result.correct, result.stage) == (False, False, "compile")
    assert result.error.startswith("C++ compilation failed: main.cpp:3:"), result.error
    assert "undeclared_in_init_xyz" in result.log
    assert result.error_location is not None and result.error_location.line == 18
    assert_still_works()


def test_compile_that_never_ends_is_killed_with_its_compiler(
    benchmarker: Benchmarker,
    fast_config: EvalConfig,
    bench_cache: Path,
    sources,
    assert_still_works,
) -> None:
    ref, candidate = sources
    source = candidate("compile_forever").replace("MARKER", uuid.uuid4().hex)
    fast_config.compile_timeout_s = 4.0
    result = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert (result.compiled, result.correct, result.stage) == (False, False, "timeout")
    assert "compile/import timed out after 4s" in result.error
    # Every compiler process works on a file under this session's cache dir: none may survive.
    assert wait_until_gone(str(bench_cache)) == []
    assert_still_works()


def assert_built_once(
    benchmarker: Benchmarker, config: EvalConfig, reference: str, source: str, bench_cache: Path
) -> None:
    """Evaluate `source` twice: the second run must load the first run's library untouched."""
    before = set((bench_cache / "ext").glob("*/*.so"))
    first = benchmarker.evaluate(reference, source, config)
    assert first.correct, first.summary() + first.log[-3000:]
    assert "c++ -MMD" in first.log  # the compiler's command line, from the verbose build
    (library,) = set((bench_cache / "ext").glob("*/*.so")) - before
    built_at = library.stat().st_mtime_ns
    second = benchmarker.evaluate(reference, source, config)
    assert second.correct, second.summary()
    assert library.stat().st_mtime_ns == built_at
    assert "c++ -MMD" not in second.log and "ninja" not in second.log  # no compiler ran
    assert second.compile_s < first.compile_s


def test_identical_cpp_candidate_is_not_rebuilt(
    benchmarker: Benchmarker, fast_config: EvalConfig, bench_cache: Path, sources
) -> None:
    ref, candidate = sources
    unique = candidate("cpp_ctypes_a").replace(
        "#include <cstdint>", f"#include <cstdint> // {uuid.uuid4().hex}"
    )
    assert_built_once(benchmarker, fast_config, ref("scale_add"), unique, bench_cache)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torch_extension_candidate_passes_and_is_not_rebuilt(
    benchmarker: Benchmarker, fast_config: EvalConfig, bench_cache: Path, sources
) -> None:
    """A real pybind/torch extension (torch/extension.h takes ~20-100 s to compile here)."""
    ref, candidate = sources
    fast_config.compile_timeout_s = 600.0
    source = candidate("cpp_honest")
    assert_built_once(benchmarker, fast_config, ref("scale_add"), source, bench_cache)


def test_same_extension_name_different_sources_do_not_collide(
    evaluate_files, bench_cache: Path
) -> None:
    libraries = set()
    for name in ("cpp_ctypes_a", "cpp_ctypes_b", "cpp_ctypes_a"):
        result = evaluate_files("scale_add", name)
        assert result.correct, result.summary() + result.log[-3000:]
        libraries |= set((bench_cache / "ext").glob("*/stark_shared_name_*.so"))
    # One library per source, each in its own hash directory under its own module name.
    assert len({p.parent for p in libraries}) >= 2 and len({p.name for p in libraries}) >= 2


def test_concurrent_builds_of_one_hash_and_a_stale_lock(tmp_path: Path) -> None:
    """Two workers building the same sources at once both succeed (one builds, one waits and
    loads), and a torch lock file left by a killed build is not waited on forever."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from engine.bench.compile_cache import CompileCache
        cache = CompileCache(Path({str(tmp_path)!r}), "cpu")
        cache.install()
        import importlib.util
        spec = importlib.util.spec_from_file_location("c", {str(Path(__file__).parent / "adversarial" / "cpp_ctypes_a.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(json.dumps([r.hit for r in cache.records]))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    hits = sorted(run.communicate(timeout=120)[0].decode().strip().splitlines()[-1] for run in runs)
    assert [r.returncode for r in runs] == [0, 0]
    assert hits == ["[false]", "[true]"]

    (build_dir,) = [p for p in (tmp_path / "ext").iterdir() if p.is_dir()]
    (build_dir / "stark_built.json").unlink()  # force a rebuild ...
    (build_dir / "lock").write_text("")  # ... behind the baton of a build that was killed
    rerun = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, env=env, timeout=120, check=False
    )
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert rerun.stdout.decode().strip().splitlines()[-1] == "[false]"


def test_many_evaluations_in_a_row_with_faults_mixed_in(evaluate_files) -> None:
    sequence = [
        ("honest", "ok"),
        ("segfault", "crash"),
        ("empty_like", "correctness"),
        ("honest", "ok"),
        ("sys_exit_import", "import"),
        ("cpp_ctypes_a", "ok"),
        ("abort", "crash"),
        ("exit_in_forward", "crash"),
        ("huge_alloc", "runtime"),
        ("compile_error", "compile"),
        ("inplace_input", "correctness"),
        ("honest", "ok"),
    ]
    for name, expected in sequence:
        result = evaluate_files("scale_add", name)
        got = "ok" if result.correct else result.stage
        assert got == expected, f"{name}: {result.summary()}"


def test_exception_in_forward_points_at_the_line(evaluate_files) -> None:
    result = evaluate_files("scale_add", "raises_in_forward")
    assert (result.compiled, result.correct, result.stage) == (True, False, "runtime")
    assert result.error.startswith("forward raised RuntimeError: ")
    assert "cannot be multiplied" in result.error and "\n" not in result.error
    assert result.error_location is not None
    assert (result.error_location.line, result.error_location.function) == (12, "forward")


def test_syntax_error_and_missing_model_new(
    benchmarker: Benchmarker, fast_config: EvalConfig, sources, evaluate_files
) -> None:
    ref, candidate = sources
    honest = candidate("honest")
    broken_line = "        return x +"
    source = honest.replace("        return torch.relu(x * self.w + self.b)", broken_line)
    broken = benchmarker.evaluate(ref("scale_add"), source, fast_config)
    assert (broken.compiled, broken.stage) == (False, "import")
    assert broken.error.startswith("import failed: SyntaxError")
    assert broken.error_location is not None
    assert broken.error_location.line == source.splitlines().index(broken_line) + 1
    missing = evaluate_files("scale_add", "no_model_new")
    assert (missing.compiled, missing.stage) == (False, "import")
    assert missing.error == "candidate defines no ModelNew"


def test_broken_reference_is_not_blamed_on_the_candidate(evaluate_files) -> None:
    result = evaluate_files("missing_init_inputs", "honest")
    assert (result.correct, result.stage) == (False, "reference")
    assert "get_init_inputs" in result.error and "not the candidate's fault" in result.error


HAS_CUDA = Path("/dev/nvidiactl").exists() and _torch_has_cuda()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.timeout(900)
def test_gpu_honest_candidate_and_illegal_memory_access(evaluate_files, assert_still_works) -> None:
    honest = evaluate_files("scale_add", "honest", device="cuda")
    assert honest.correct and honest.device == "cuda", honest.summary()
    assert honest.host_ms is not None and 0.2 < honest.speedup < 5.0
    crashed = evaluate_files(
        "scale_add", "cuda_illegal_access", device="cuda", compile_timeout_s=600
    )
    assert (crashed.compiled, crashed.correct, crashed.stage) == (True, False, "runtime")
    assert "illegal memory access" in crashed.error
    assert_still_works()
