#!/usr/bin/env python3
"""A 6-task batch three ways — `--workers 1`, `--workers 2`, and `--ray` on a local cluster
started here — with the same per-task verdicts required of all three; then kill -9 of a
`--workers 2` driver mid-batch and `--resume`, counting each node's benchmark verdicts.

    .venv/bin/python benchmarks/batch_scale.py [--rounds 2] [--repeats 1] [--json FILE]

The references are tiny elementwise chains, searched by the offline agent with plain-PyTorch
kernels (STARK_OFFLINE_KERNELS=0), so the figures measure the batch machinery (processes,
benchmarkers, Ray), not a model. Wall times are for the whole `stark batch` command; with
--repeats N each mode runs N times and the median and IQR are printed. Two rounds (the seed
and one expansion) keep each tree's shape independent of timing noise, so the verdicts of
the three runs can be compared node by node.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = """\
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return {expr}


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(256, 256)]


def get_init_inputs() -> list:
    return []
"""
EXPRESSIONS = {
    "relu_scale": "torch.relu(x) * 2.0 + 1.0",
    "tanh_shift": "torch.tanh(x) - 0.5",
    "sigmoid_mul": "torch.sigmoid(x) * x",
    "abs_sqrt": "torch.sqrt(torch.abs(x) + 1.0)",
    "exp_neg": "torch.exp(-x * x)",
    "clamp_sum": "torch.clamp(x, -1.0, 1.0) + x",
}
QUICK = ["--timing-budget", "0.2", "--correctness-trials", "2", "--no-profile"]


def stark(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def batch_command(refs: Path, out: Path, rounds: int, *extra: str) -> list[str]:
    return stark(
        "batch", str(refs), "--agent", "offline", "--rounds", str(rounds), "--device", "cpu",
        "--out", str(out), "--no-compile-baseline", *QUICK, *extra,
    )  # fmt: skip


def run_json(command: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


def tree_nodes(task_dir: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((task_dir / "tree.json").read_text())["tree"]["nodes"])
    except (OSError, ValueError, KeyError):
        return []


def verdicts(summary: dict[str, Any]) -> dict[str, Any]:
    """Per node: phase, the benchmark's verdict, error, code. Not the `baseline` label (nor
    the task's `correct`, which follows from it): whether a node that behaves as the
    reference is within noise of 1.0 is a timing judgement, and differed for 1 of 6 tasks
    between two `--workers 1` runs here."""
    run_dir = Path(summary["run_dir"])
    result = {}
    for task in summary["tasks"]:
        nodes = [
            (
                n["phase"],
                bool((n.get("metrics") or {}).get("correct")),
                n["error"],
                hashlib.sha256((n.get("code") or "").encode()).hexdigest()[:12],
            )
            for n in tree_nodes(run_dir / task["task"])
        ]
        result[task["task"]] = (task["nodes"], task["correct_nodes"], task["error"], nodes)
    return result


def verify_counts(task_dir: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for index in task_dir.glob("trace/*/trace_index.jsonl"):
        for line in index.read_text().splitlines():
            record = json.loads(line)
            if record.get("action") == "VERIFY" and record.get("node_id") is not None:
                counts[record["node_id"]] = counts.get(record["node_id"], 0) + 1
    return counts


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f} s (1 run)"
    q1, _, q3 = statistics.quantiles(values, n=4)
    return f"{statistics.median(values):.1f} s (IQR {q3 - q1:.1f} s, {len(values)} runs)"


@contextlib.contextmanager
def ray_cluster(env: dict[str, str]) -> Any:
    """`ray start --head` on 127.0.0.1 with 2 CPUs (env: single-node, loopback only); its
    processes (found by our temp dir) are killed by pid at the end."""
    temp_dir = Path(tempfile.mkdtemp(prefix="sr", dir="/tmp"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray = Path(sys.executable).parent / "ray"
    subprocess.run(
        [str(ray), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ours = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(temp_dir) in " ".join(p.info["cmdline"] or [])
        ]
        for proc in ours:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(ours, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def kill_and_resume(refs: Path, out: Path, rounds: int, env: dict[str, str]) -> dict[str, Any]:
    """kill -9 of a --workers 2 driver once 2 tasks have 2+ nodes, then --resume."""
    proc = subprocess.Popen(
        batch_command(refs, out, rounds, "--workers", "2"),
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 900
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        run_dir = next(iter(out.glob("batch-*")), None)
        if run_dir and sum(len(tree_nodes(t)) >= 2 for t in run_dir.glob("0*")) >= 2:
            break
        time.sleep(0.2)
    if run_dir is None or proc.poll() is not None:
        raise SystemExit("the batch ended (or never started) before it could be killed")
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=30)
    before = {t.name: {n["node_id"] for n in tree_nodes(t)} for t in run_dir.glob("0*")}
    counts = {name: verify_counts(run_dir / name) for name in before}
    summary, wall = run_json(stark("batch", "--resume", str(run_dir), "--workers", "2"), env)
    redone = 0
    for name, ids in before.items():
        now = verify_counts(run_dir / name)
        redone += sum(now.get(i, 0) != counts[name].get(i, 0) for i in ids)
    return {
        "nodes_before_kill": sum(len(ids) for ids in before.values()),
        "tasks_started_before_kill": len(before),
        "workers_alive_after_kill": len(alive),
        "resume_wall_s": round(wall, 1),
        "tasks_finished": sum(1 for t in summary["tasks"] if t["error"] is None),
        "tasks": len(summary["tasks"]),
        "nodes_after_resume": sum(t["nodes"] for t in summary["tasks"]),
        "committed_nodes_benchmarked_again": redone,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stark-batch-scale-"))
    refs = work / "refs"
    refs.mkdir()
    for name, expr in EXPRESSIONS.items():
        (refs / f"{name}.py").write_text(TEMPLATE.format(expr=expr))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STARK_"))}
    env.update(PYTHONPATH=str(ROOT), STARK_OFFLINE_KERNELS="0")
    env["STARK_CACHE_DIR"] = str(work / "cache")
    env.update(  # the cluster: one node on loopback only, a token of its own, no usage stats
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
    )
    figures: dict[str, Any] = {"cores": len(os.sched_getaffinity(0)), "rounds": args.rounds}
    walls: dict[str, list[float]] = {}
    results: dict[str, dict[str, Any]] = {}
    with ray_cluster(env) as address:
        modes = {"workers 1": [], "workers 2": ["--workers", "2"], "ray": ["--ray", address]}
        for repeat in range(args.repeats):
            for mode, extra in modes.items():
                out = work / f"{mode.replace(' ', '')}-{repeat}"
                summary, wall = run_json(batch_command(refs, out, args.rounds, *extra), env)
                walls.setdefault(mode, []).append(wall)
                results.setdefault(mode, verdicts(summary))
                if verdicts(summary) != results["workers 1"]:
                    raise SystemExit(f"{mode} (run {repeat}) gave other verdicts than workers 1")
                print(f"{mode:10s} run {repeat}: {wall:6.1f} s", flush=True)
    figures["wall"] = {mode: spread(values) for mode, values in walls.items()}
    figures["wall_s"] = {mode: [round(v, 1) for v in values] for mode, values in walls.items()}
    figures["same_verdicts"] = True
    figures["correct_nodes"] = sum(v[1] for v in results["workers 1"].values())
    figures["nodes"] = sum(v[0] for v in results["workers 1"].values())
    figures["kill9_resume"] = kill_and_resume(refs, work / "killed", max(args.rounds, 4), env)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
