"""Set-up picks the torch build for the machine, so nobody pulls gigabytes of CUDA wheels
onto a CPU box (or a CPU build onto a GPU box) by accident."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def printed_spec(option: str, override: str, path_prefix: Path | None, **env: str) -> str:
    """What `setup.sh OPTION` prints, with the override variable unset unless given."""
    environ = {k: v for k, v in os.environ.items() if k != override}
    environ.update(env)
    if path_prefix is not None:
        environ["PATH"] = f"{path_prefix}{os.pathsep}{environ['PATH']}"
    done = subprocess.run(
        ["bash", str(SETUP), option], env=environ, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def torch_spec(path_prefix: Path | None = None, **env: str) -> str:
    return printed_spec("--print-torch-spec", "STARK_TORCH_SPEC", path_prefix, **env)


def triton_spec(path_prefix: Path, **env: str) -> str:
    return printed_spec("--print-triton-spec", "STARK_TRITON_SPEC", path_prefix, **env)


def fake_nvidia_smi(tmp_path: Path, output: str) -> Path:
    tool = tmp_path / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def test_cpu_machine_gets_the_pinned_cpu_build(tmp_path: Path) -> None:
    # An nvidia-smi that lists no GPU (driver installed, no device) is a CPU machine too.
    assert torch_spec(fake_nvidia_smi(tmp_path, "No devices were found")) == "torch==2.13.0"


def test_gpu_machine_gets_the_cuda_build(tmp_path: Path) -> None:
    gpu = fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)")
    assert torch_spec(gpu) == "torch"


def test_explicit_spec_wins(tmp_path: Path) -> None:
    gpu = fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)")
    assert torch_spec(gpu, STARK_TORCH_SPEC="torch==2.5.1") == "torch==2.5.1"


def test_unknown_option_is_a_usage_error() -> None:
    done = subprocess.run(
        ["bash", str(SETUP), "--bogus"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr


def test_tests_on_a_cpu_machine_get_a_pinned_triton(tmp_path: Path) -> None:
    assert triton_spec(fake_nvidia_smi(tmp_path, "No devices were found")) == "triton==3.9.0"


def test_tests_on_a_gpu_machine_keep_the_triton_torch_brings(tmp_path: Path) -> None:
    gpu = fake_nvidia_smi(tmp_path, "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)")
    assert triton_spec(gpu) == ""
    assert triton_spec(gpu, STARK_TRITON_SPEC="triton==3.6.0") == "triton==3.6.0"
