"""A stand-in engine for fault-injection tests, started through the server's
`engineCommand` hook as `python fake_engine.py --state DIR <subcommand> ...`.

It records what the server gave it (`DIR/env_<subcommand>.json`,
`DIR/argv_<subcommand>.json`) and answers like the engine would, with a few
malformed event lines mixed into the optimize stream. `DIR/scenario.json` sets
the best speedup it reports (default 1.5)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

KERNEL = """\
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
"""

BAD_LINES = [
    "{this line is not json",
    json.dumps({"event": "no_such_event", "task_id": "t", "ts": 0}),
    json.dumps(
        {
            "event": "round_finished",
            "task_id": "t",
            "ts": 0,
            "round": "zero",
            "rounds": 1,
            "best_speedup": None,
            "nodes": 1,
            "buggy": 0,
        }
    ),
]


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "task_id": "t", "ts": time.time(), **fields}), flush=True)


def optimize(state: Path, args: list[str]) -> None:
    scenario_file = state / "scenario.json"
    scenario = json.loads(scenario_file.read_text()) if scenario_file.exists() else {}
    speedup = float(scenario.get("speedup", 1.5))
    task_dir = state / f"task_{time.time_ns()}"
    (task_dir / "code").mkdir(parents=True)
    (task_dir / "code" / "node_0001.py").write_text(KERNEL)
    emit(
        "task_started",
        reference=args[0],
        task_dir=str(task_dir),
        rounds=1,
        agent="offline",
        model="fake",
        device="cpu",
    )
    print("some library chatter on stdout", flush=True)
    for line in BAD_LINES:
        print(line, flush=True)
    node = {
        "id": 1,
        "parent": None,
        "phase": "seed",
        "runnable": True,
        "buggy": False,
        "speedup": speedup,
        "round": 0,
        "code_path": "code/node_0001.py",
        "field_from_a_newer_engine": {"anything": 1},
    }
    result = {"compiled": True, "correct": True, "speedup": speedup, "stage": "done"}
    emit("node_benchmarked", round=0, node=node, result=result, trace_files=[])
    emit("best_improved", round=0, node_id=1, speedup=speedup, code_path="code/node_0001.py")
    emit("round_finished", round=0, rounds=1, best_speedup=speedup, nodes=1, buggy=0, tree=[node])
    summary = {
        "best_speedup": speedup,
        "best_kernel": str(task_dir / "code" / "node_0001.py"),
        "task_dir": str(task_dir),
    }
    emit("task_finished", summary=summary)


def main() -> int:
    assert sys.argv[1] == "--state", sys.argv
    state = Path(sys.argv[2])
    command, args = sys.argv[3], sys.argv[4:]
    (state / f"env_{command}.json").write_text(json.dumps(dict(os.environ)))
    (state / f"argv_{command}.json").write_text(json.dumps(sys.argv[3:]))
    if command == "optimize":
        optimize(state, args)
    elif command == "bench":
        print(json.dumps({"compiled": True, "correct": True, "speedup": 1.25, "stage": "done"}))
    elif command == "debug":
        print(json.dumps({"error": "fake engine: no fix", "fixed_code": None}))
    else:
        print(f"fake engine: unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
