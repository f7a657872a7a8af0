"""A stand-in engine for fault-injection tests, started through the server's
`engineCommand` hook as `python fake_engine.py --state DIR <subcommand> ...`.

It records what the server gave it (`DIR/env_<subcommand>.json`,
`DIR/argv_<subcommand>.json`) and answers like the engine would, with a few
malformed event lines mixed into the optimize stream. `DIR/scenario.json` sets:

- `speedup`: the search's best speedup (default 1.5);
- `remeasured_speedup` (default: `speedup`) and `beyond_iqr` (default true): the fresh
  measurement vs eager that `task_finished` reports (docs/events.md);
- `remeasure_error`: the re-measurement failed with this message (no figure);
- `vs_compile_speedup`: also a comparison against torch.compile;
- `legacy`: true for the summary of an engine without re-measurement (no `remeasured`,
  no `search_best_speedup`);
- `hold_s`: at most this many seconds between the last round and the end, or until the
  file `DIR/release` appears (to look at a running job)."""

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


def comparison(speedup: float, beyond_iqr: bool) -> dict:
    """A re-measurement against one baseline: 2 ms for the baseline, its IQRs apart from
    the kernel's (or overlapping when not `beyond_iqr`)."""
    base, cand = 2.0, 2.0 / speedup
    iqr = 0.02 if beyond_iqr else abs(base - cand) * 4 + 0.2
    return {
        "speedup": speedup,
        "baseline_ms": {"median": base, "iqr": iqr},
        "candidate_ms": {"median": cand, "iqr": iqr},
        "beyond_iqr": beyond_iqr,
        "noisy": not beyond_iqr,
    }


def final_summary(scenario: dict, task_dir: Path, speedup: float) -> dict:
    summary = {
        "best_speedup": speedup,
        "best_kernel": str(task_dir / "code" / "node_0001.py"),
        "task_dir": str(task_dir),
    }
    if scenario.get("legacy"):
        return summary
    if scenario.get("remeasure_error"):
        remeasured = {"vs_eager": None, "vs_compile": None, "error": scenario["remeasure_error"]}
        summary["best_speedup"] = None
    else:
        fresh = float(scenario.get("remeasured_speedup", speedup))
        beyond = bool(scenario.get("beyond_iqr", True))
        compiled = scenario.get("vs_compile_speedup")
        remeasured = {
            "vs_eager": comparison(fresh, beyond),
            "vs_compile": comparison(float(compiled), beyond) if compiled else None,
            "error": None,
        }
        summary["best_speedup"] = fresh
    summary.update(
        search_best_speedup=speedup, remeasured=remeasured, field_from_a_newer_engine=[1, 2]
    )
    return summary


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
    hold_until = time.monotonic() + float(scenario.get("hold_s", 0))
    while time.monotonic() < hold_until and not (state / "release").exists():
        time.sleep(0.05)
    emit("task_finished", summary=final_summary(scenario, task_dir, speedup))


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
