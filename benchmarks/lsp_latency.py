"""Latency of codeLens, codeAction and hover while two optimization jobs run
(the real engine with the offline agent on two references). Target: p99 <=
20 ms, measured at the client (round trip over stdio), so it includes JSON-RPC
and pygls overhead, not just our handlers.

    .venv/bin/python benchmarks/lsp_latency.py [--requests 300] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lsprotocol import types
from pytest_lsp import ClientServerConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ["elementwise_chain.py", "row_softmax.py"]
TARGET_P99_MS = 20.0


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run(requests: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="stark-lsp-latency-"))
    try:
        for name in EXAMPLES:
            shutil.copy(ROOT / "examples" / name, work / name)
        client = await ClientServerConfig(
            server_command=[sys.executable, "-P", "-m", "stark_lsp"]
        ).start()
        running: set[str] = set()

        @client.feature("stark/jobUpdated")
        def on_update(params) -> None:
            (running.add if params.state == "running" else running.discard)(params.jobId)

        await client.initialize_session(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(
                    window=types.WindowClientCapabilities(work_done_progress=True)
                ),
                root_uri=work.as_uri(),
                initialization_options={
                    "agent": "offline",
                    "device": "cpu",
                    "outDir": str(work / "runs"),
                },
            )
        )
        uris = []
        for name in EXAMPLES:
            path = work / name
            uri = path.as_uri()
            uris.append(uri)
            client.text_document_did_open(
                types.DidOpenTextDocumentParams(
                    text_document=types.TextDocumentItem(
                        uri=uri, language_id="python", version=1, text=path.read_text()
                    )
                )
            )
        jobs = []
        for uri in uris:
            answer = await client.workspace_execute_command_async(
                types.ExecuteCommandParams(
                    command="stark.optimize", arguments=[{"uri": uri, "rounds": 100}]
                )
            )
            jobs.append(answer.jobId if hasattr(answer, "jobId") else answer["jobId"])
        deadline = time.monotonic() + 120
        while len(running) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # let both engines get into their benchmark loops

        doc = types.TextDocumentIdentifier(uri=uris[0])
        model_line = next(
            i
            for i, t in enumerate((work / EXAMPLES[0]).read_text().splitlines())
            if t.startswith("class Model")
        )
        position = types.Position(line=model_line, character=7)
        calls = {
            "codeLens": lambda: client.text_document_code_lens_async(
                types.CodeLensParams(text_document=doc)
            ),
            "codeAction": lambda: client.text_document_code_action_async(
                types.CodeActionParams(
                    text_document=doc,
                    range=types.Range(start=position, end=position),
                    context=types.CodeActionContext(diagnostics=[]),
                )
            ),
            "hover": lambda: client.text_document_hover_async(
                types.HoverParams(text_document=doc, position=position)
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(requests):
            for name, call in calls.items():
                start = time.perf_counter()
                await call()
                samples[name].append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.005)
        jobs_running_at_end = len(running)
        for job in jobs:
            with contextlib.suppress(Exception):  # already finished
                await client.workspace_execute_command_async(
                    types.ExecuteCommandParams(command="stark.cancel", arguments=[{"jobId": job}])
                )
        await client.shutdown_session()
        await client.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        name: {
            "n": len(values),
            "p50_ms": statistics.median(values),
            "p99_ms": _percentile(values, 0.99),
            "max_ms": max(values),
        }
        for name, values in samples.items()
    }
    result["jobs_running_at_end"] = jobs_running_at_end
    result["target_p99_ms"] = TARGET_P99_MS
    result["load_average_1m"] = os.getloadavg()[0]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.requests))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name in ("codeLens", "codeAction", "hover"):
        r = result[name]
        print(
            f"{name:10s} n={r['n']}  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.2f} ms"
        )
    print(f"jobs still running at the end: {result['jobs_running_at_end']} (want 2)")
    print(
        f"target p99 <= {TARGET_P99_MS} ms; load average (1 min): {result['load_average_1m']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
