#!/usr/bin/env python3
"""One 12-round search with `--parallel 1` and with `--parallel 4`, against a local fake
OpenAI-compatible server that answers every call after 2 s (each on its own thread), with the
real benchmarker, whose timing phases take turns on the device lease.

    .venv/bin/python benchmarks/parallel_search.py [--rounds 12] [--delay 2] [--repeats 3]
                                                   [--widths 1 4] [--json FILE]

The runs alternate (1, 4, 1, 4, ...) so load on the machine drifts over both alike; each
width's wall times are reported as median and IQR over its repeats, the ratio as the ratio of
the medians. "wall" is the whole `stark optimize` command (process start, self-check, search,
re-measurement); "search" is the summary's `wall_s`. Every candidate is distinct (the reply
names the prompt's hash), so every node is benchmarked; the lease waits of all evaluations
are summed from evaluation/node_*.json. Target (issue 14): parallel 4 wall <= 0.45 x
parallel 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes import FakeOpenAIServer, FakeReply  # noqa: E402 - after the path

REFERENCE = """\
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 2.0 + 1.0


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(256, 256)]


def get_init_inputs() -> list:
    return []
"""
KERNEL = """\
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.relu(x)
        return y * 2.0 + 1.0  # variant {tag}
"""
PLAN = {
    "title": "fuse the epilogue",
    "steps": ["compute the scale and shift on the relu output"],
    "transformations": ["fusion"],
    "rationale": "fewer passes over memory",
}
ANCHORED = KERNEL.replace(
    "        y = torch.relu(x)\n", "        # <<<IMPROVE BEGINS>>>\n        y = torch.relu(x)\n"
).replace("  # variant {tag}\n", "\n        # <<<IMPROVE ENDS>>>\n")
QUICK = ["--timing-budget", "0.3", "--correctness-trials", "2", "--no-profile"]


def fenced(lang: str, body: str) -> str:
    return f"```{lang}\n{body.rstrip()}\n```"


def reply(delay_s: float):  # noqa: ANN201 - the fake server's script type
    def answer(body: dict[str, Any]) -> FakeReply:
        prompt = body["messages"][-1]["content"]
        tag = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        if "You are the planner" in prompt:
            text = f"{fenced('json', json.dumps(PLAN))}\n{fenced('python', ANCHORED)}"
        else:  # seed, coder, debugger: a correct kernel of its own
            text = fenced("python", KERNEL.format(tag=tag))
        return FakeReply(text=text, delay_s=delay_s)

    return answer


def run_search(width: int, rounds: int, base_url: str, work: Path) -> dict[str, Any]:
    out = work / f"runs-{width}-{time.monotonic_ns()}"
    command = [
        sys.executable,
        "-m",
        "engine",
        "optimize",
        str(work / "relu_chain.py"),
        "--agent",
        "openai",
        "--base-url",
        base_url,
        "--model",
        "fake-model",
        "--rounds",
        str(rounds),
        "--device",
        "cpu",
        "--parallel",
        str(width),
        "--no-compile-baseline",
        "--out",
        str(out),
        "--json",
        *QUICK,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-fake-benchmark-key-000"}
    load = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"--parallel {width} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    task_dir = Path(summary["task_dir"])
    results = [
        json.loads(path.read_text())["result"]
        for path in sorted((task_dir / "evaluation").glob("node_*.json"))
    ]
    evaluated = [r for r in results if r]
    return {
        "width": width,
        "wall_s": wall,
        "search_s": summary["wall_s"],
        "nodes": summary["nodes"],
        "llm_calls": summary["llm_calls"],
        "evaluations": len(evaluated),
        "lease_wait_s": sum(r.get("lease_wait_s") or 0.0 for r in evaluated),
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def median_iqr(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], 0.0
    quartiles = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), quartiles[2] - quartiles[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds per model reply")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--json", type=Path, help="write the runs and figures here")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="stark-parallel-") as tmp,
        FakeOpenAIServer(reply(args.delay)) as server,
    ):
        work = Path(tmp)
        (work / "relu_chain.py").write_text(REFERENCE)
        for repeat in range(args.repeats):
            for width in args.widths:
                run = run_search(width, args.rounds, server.base_url, work)
                runs.append(run)
                print(
                    f"[{repeat + 1}/{args.repeats}] --parallel {width}: wall {run['wall_s']:.1f} s "
                    f"(search {run['search_s']:.1f} s), {run['llm_calls']} calls, "
                    f"{run['evaluations']} evaluations, lease waits {run['lease_wait_s']:.1f} s, "
                    f"load {run['load_before']:.1f} -> {run['load_after']:.1f}",
                    flush=True,
                )
    figures: dict[str, Any] = {"runs": runs, "cpus": os.cpu_count(), "delay_s": args.delay}
    print(f"\n{args.rounds} rounds, replies after {args.delay:g} s, {os.cpu_count()} CPUs:")
    for key in ("wall_s", "search_s"):
        medians = {}
        for width in args.widths:
            median, iqr = median_iqr([r[key] for r in runs if r["width"] == width])
            medians[width] = median
            figures[f"{key}_{width}"] = {"median": median, "iqr": iqr}
            print(f"  {key:9} --parallel {width}: {median:6.1f} s (IQR {iqr:.1f} s)")
        base, widest = args.widths[0], args.widths[-1]
        ratio = medians[widest] / medians[base]
        figures[f"{key}_ratio"] = ratio
        print(f"  {key:9} ratio {widest}/{base}: {ratio:.2f}x (target <= 0.45x)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
