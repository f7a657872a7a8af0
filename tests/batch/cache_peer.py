"""One peer of `test_compile_cache_peers`: a process with its own Benchmarker on a shared
cache dir, trusting its peers through a key given on stdin (as a batch worker gets it, never
from a file or the environment).

    python -m tests.batch.cache_peer CACHE_DIR BARRIER_DIR NAME PEERS < key_hex

Each round waits until all PEERS processes have reached it (files in BARRIER_DIR, bounded),
then evaluates the same load_inline candidate; one JSON line per round on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REFERENCE = """\
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0 + 1.0


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(64, 64)]


def get_init_inputs() -> list:
    return []
"""

# The smallest real extension: pybind11 only (no torch headers), about 6 s to build here.
CANDIDATE = '''\
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_SOURCE = r"""
#include <pybind11/pybind11.h>
double two() { return 2.0; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("two", &two); }
"""
_ext = load_inline(
    name="stark_peer_two",
    cpp_sources=[_SOURCE],
    no_implicit_headers=True,
    with_pytorch_error_handling=False,
)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * _ext.two() + 1.0
'''
BARRIER_TIMEOUT_S = 240.0


def wait_for_peers(barrier: Path, name: str, round_: int, peers: int) -> None:
    (barrier / f"{round_}-{name}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(barrier.glob(f"{round_}-*"))) < peers:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: peers never reached round {round_}")
        time.sleep(0.05)


def main() -> None:
    cache_dir, barrier, name, peers = (
        Path(sys.argv[1]),
        Path(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]),
    )
    from engine.bench import Benchmarker, EvalConfig
    from engine.bench.cache_manifest import share_with_peers

    share_with_peers(bytes.fromhex(sys.stdin.readline().strip()))
    config = EvalConfig(
        device="cpu",
        timing_budget_s=0.2,
        correctness_trials=2,
        profile=False,
        compile_timeout_s=240,
        run_timeout_s=60,
    )
    with Benchmarker(cache_dir=cache_dir) as bench:
        bench.warm_up()
        for round_ in range(2):
            wait_for_peers(barrier, name, round_, peers)
            result = bench.evaluate(REFERENCE, CANDIDATE, config)
            built = "c++" in result.log  # ninja's compiler lines: really built, not loaded
            private = "building a private copy" in result.log
            row = {
                "name": name,
                "round": round_,
                "correct": result.correct,
                "flags": result.flags,
                "built": built,
                "private": private,
                "error": result.error,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
