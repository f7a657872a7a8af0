"""What environment candidate code inherits: the caller's, minus anything that looks
like a credential, and a fork server whose own /proc environ no candidate can read."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Mapping
from pathlib import Path

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
PR_SET_DUMPABLE = 4

# Environment variables whose NAME says they hold a secret never reach the fork server.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.I)
# Names the build and the run need; kept unless the name itself says secret. Everything else
# is also dropped when its VALUE looks like a key (see engine.trace.sanitize.redact).
_ESSENTIAL_NAMES = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TMPDIR", "TERM"}
_ESSENTIAL_PREFIXES = (
    "CC",
    "CXX",
    "CFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "CUDA",
    "NVCC",
    "NVIDIA_",
    "TORCH",
    "TRITON_",
    "LD_",
    "LC_",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "PYTHON",
    "STARK_",
    "XDG_",
    "VIRTUAL_ENV",
    "CONDA",
    "MAX_JOBS",
)


def is_secret_variable(name: str, value: str) -> bool:
    """Would this environment variable hand a credential to candidate code?"""
    if _SECRET_NAME.search(name):
        return True
    if name in _ESSENTIAL_NAMES or name.startswith(_ESSENTIAL_PREFIXES):
        return False
    from engine.trace.sanitize import redact  # parent only; keeps the worker's imports lean

    return redact(value, environ={}) != value


def hide_own_environment() -> bool:
    """Make this process non-dumpable if its environment holds a secret; True if it did.

    Any process of the same user, a candidate included, can read /proc/PID/environ of its
    ancestors, and the kernel keeps the initial environment block even after os.environ is
    scrubbed. A non-dumpable process's /proc files belong to root. (Side effects: no core
    dumps, and a debugger or py-spy needs root to attach.)"""
    try:
        with open("/proc/self/environ", "rb") as fh:
            block = fh.read().decode("utf-8", errors="replace").split("\0")
    except OSError:
        return False
    variables = [entry.partition("=") for entry in block if "=" in entry]
    current = list(os.environ.items())
    if not any(is_secret_variable(n, v) for n, _, v in variables) and not any(
        is_secret_variable(n, v) for n, v in current
    ):
        return False
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0
    return False


def scrubbed_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fork server's environment: the caller's, minus anything that looks secret, plus
    what the harness needs. Candidate code inherits exactly this."""
    source = os.environ if environ is None else environ
    env = {name: value for name, value in source.items() if not is_secret_variable(name, value)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Inductor's compile worker pool leaves threads behind and competes with the timed
    # kernels on small machines; one thread unless the user chose otherwise.
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    return env
