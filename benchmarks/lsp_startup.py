"""Start-up of the STARK language server: wall time from spawning
`python -P -m stark_lsp` (as clients start it) to the `initialize` reply, and
the idle RSS afterwards. Targets: <= 0.6 s and <= 80 MB. Raw JSON-RPC over
the pipes, so no client library's cost is counted.

    .venv/bin/python benchmarks/lsp_startup.py [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.6
TARGET_MB = 80.0


def _frame(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_message(stream) -> dict:
    length = 0
    while True:
        line = stream.readline()
        if not line:
            raise RuntimeError("server closed its stdout")
        if line in (b"\r\n", b"\n"):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(stream.read(length))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (less sensitive to a loaded machine)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(root: Path) -> tuple[float, float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "stark_lsp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(
            _frame(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "processId": os.getpid(),
                        "rootUri": root.as_uri(),
                        "capabilities": {"window": {"workDoneProgress": True}},
                        "initializationOptions": {"agent": "offline"},
                    },
                }
            )
        )
        proc.stdin.flush()
        while True:
            message = _read_message(proc.stdout)
            if message.get("id") == 1:
                break
        elapsed = time.perf_counter() - start
        cpu = _cpu_s(proc.pid)
        proc.stdin.write(_frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        proc.stdin.flush()
        time.sleep(1.0)  # idle
        rss = _rss_mb(proc.pid)
        proc.stdin.write(_frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        proc.stdin.write(_frame({"jsonrpc": "2.0", "method": "exit"}))
        proc.stdin.flush()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return elapsed, rss, cpu


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one_run(Path(tmp))  # warm the OS file cache
        results = [one_run(Path(tmp)) for _ in range(args.runs)]
    times = [r[0] for r in results]
    rss = [r[1] for r in results]
    summary = {
        "runs": args.runs,
        "startup_s_median": statistics.median(times),
        "startup_s_min": min(times),
        "startup_s_max": max(times),
        "startup_cpu_s_median": statistics.median(r[2] for r in results),
        "idle_rss_mb_median": statistics.median(rss),
        "target_startup_s": TARGET_S,
        "target_rss_mb": TARGET_MB,
        "load_average_1m": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"start-up to initialize reply: median {summary['startup_s_median']:.3f} s "
            f"(min {summary['startup_s_min']:.3f}, max {summary['startup_s_max']:.3f}; target <= {TARGET_S} s)"
        )
        print(
            f"CPU time of the server until that reply: median {summary['startup_cpu_s_median']:.3f} s"
        )
        print(f"idle RSS: median {summary['idle_rss_mb_median']:.1f} MB (target <= {TARGET_MB} MB)")
        print(f"load average (1 min) during the run: {summary['load_average_1m']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
