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
    assert torch_spec(fake_nvidia_smi(tmp_path, "No devices were found")) == "torch==2.13.0+cpu"


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


def run_setup_with_fake_pip(tmp_path: Path, cpu_build_reachable: bool) -> tuple[str, list[str]]:
    """setup.sh against a stand-in venv whose `python -m pip install` logs its arguments and
    fails for the +cpu wheel when that build is unreachable (no index, no local wheel)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "pip.log"
    fail_cpu = "" if cpu_build_reachable else 'case "$*" in *+cpu*) exit 1;; esac'
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/bash\n"
        '[ "$1" = -c ] && exit 1\n'  # `import torch` fails: nothing is installed yet
        f'echo "$*" >> {log}\n{fail_cpu}\nexit 0\n'
    )
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    no_gpu = fake_nvidia_smi(tmp_path, "No devices were found")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STARK_TORCH")}
    environ.update(STARK_VENV=str(venv), PATH=f"{no_gpu}{os.pathsep}{environ['PATH']}")
    done = subprocess.run(
        ["bash", str(SETUP)], env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    installs = [line for line in log.read_text().splitlines() if " install " in f" {line} "]
    return done.stderr, installs


def test_cpu_machine_asks_for_the_cpu_build_from_the_pytorch_cpu_index(tmp_path: Path) -> None:
    _, installs = run_setup_with_fake_pip(tmp_path, cpu_build_reachable=True)
    torch_installs = [line for line in installs if "torch==" in line]
    assert len(torch_installs) == 1
    assert "torch==2.13.0+cpu" in torch_installs[0]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_installs[0]


def test_unreachable_cpu_build_falls_back_to_pypi_and_says_so(tmp_path: Path) -> None:
    stderr, installs = run_setup_with_fake_pip(tmp_path, cpu_build_reachable=False)
    torch_installs = [line for line in installs if "torch==" in line]
    assert [line.split()[-1] for line in torch_installs] == ["torch==2.13.0+cpu", "torch==2.13.0"]
    assert "the CPU build of torch is not reachable" in stderr
    assert "the CUDA build, several GB" in stderr
