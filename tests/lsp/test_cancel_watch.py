"""Cancel kills the engine's whole process tree (fork server and workers
included); a client cancel of the progress stops the job; a watched file
changed on disk re-runs verification (debounced, newer cancels older)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lsprotocol import types

from stark_lsp import procs

from .helpers import TINY_REFERENCE, lsp_session

WRONG_KERNEL = """\
# stark: reference=tiny_ref.py
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * {scale}, -0.5, 2.0)
"""


async def test_cancel_kills_the_whole_process_tree(workspace: Path) -> None:
    async with lsp_session(workspace) as session:
        uri = session.open(workspace / "tiny_ref.py")
        job_id = (await session.command("stark.optimize", {"uri": uri, "rounds": 50}))["jobId"]
        running = await session.wait_for(
            lambda: [
                u for u in session.updates_for(job_id) if u["state"] == "running" and u["pid"]
            ],
            60,
            "the job to run",
        )
        pid = running[0]["pid"]
        # wait until the engine has started the benchmarker's fork server (its own session)
        tree = await session.wait_for(
            lambda: (t := procs.process_tree(pid)) and len(set(t.values())) >= 2 and t,
            120,
            "fork server",
        )
        answer = await session.command("stark.cancel", {"jobId": job_id})
        assert answer == {"jobId": job_id, "state": "cancelled"}
        assert session.updates_for(job_id)[-1]["state"] == "cancelled"
        for _ in range(50):  # reaping is quick but not instant
            if not any(procs.alive(p) for p in tree) and not any(
                procs.group_alive(g) for g in set(tree.values())
            ):
                break
            await asyncio.sleep(0.1)
        assert [p for p in tree if procs.alive(p)] == []
        assert [g for g in set(tree.values()) if procs.group_alive(g)] == []
        reports = session.client.progress_reports[f"stark/{job_id}"]
        assert (
            isinstance(reports[-1], types.WorkDoneProgressEnd)
            and "cancelled" in reports[-1].message
        )

        # a client-side cancel of the progress stops a job too
        second = (await session.command("stark.optimize", {"uri": uri, "rounds": 50}))["jobId"]
        token = f"stark/{second}"
        await session.wait_for(
            lambda: session.client.progress_reports.get(token), 30, "progress begin"
        )
        session.client.window_work_done_progress_cancel(
            types.WorkDoneProgressCancelParams(token=token)
        )
        final = await session.wait_job(second, timeout=60)
        assert final["state"] == "cancelled"


async def test_watch_reruns_on_disk_change_debounced_newer_cancels_older(workspace: Path) -> None:
    kernel = workspace / "watched_kernel.py"
    kernel.write_text(WRONG_KERNEL.format(scale="1.5"))
    (workspace / "sub").mkdir()
    (workspace / "sub" / "ref_glob.py").write_text(TINY_REFERENCE)
    options = {"watch": {"globs": ["**/ref_*.py"], "debounceMs": 300}}
    async with lsp_session(workspace, options=options) as session:
        uri = kernel.resolve().as_uri()
        watching = await session.command("stark.watch", {"uri": uri})
        assert uri in watching["watching"]
        assert (workspace / "sub" / "ref_glob.py").resolve().as_uri() in watching["watching"]

        def watch_jobs() -> list[str]:
            return list(
                dict.fromkeys(u["jobId"] for u in session.job_updates if u["origin"] == "watch")
            )

        # two quick writes from "another tool": one run (debounced)
        kernel.write_text(WRONG_KERNEL.format(scale="1.6"))
        await asyncio.sleep(0.05)
        kernel.write_text(WRONG_KERNEL.format(scale="1.7"))
        (first,) = await session.wait_for(watch_jobs, 30, "a watch-triggered run")
        await session.wait_for(
            lambda: any(u["state"] == "running" for u in session.updates_for(first)),
            30,
            "run start",
        )
        # a newer change cancels the older run for that file
        kernel.write_text(WRONG_KERNEL.format(scale="1.8"))
        await session.wait_for(lambda: len(watch_jobs()) == 2, 30, "a second run")
        assert (await session.wait_job(first, timeout=60))["state"] == "cancelled"
        second = watch_jobs()[1]
        final = await session.wait_job(second, timeout=240)
        assert final["state"] == "done" and final["verdict"]["correct"] is False
        await session.wait_for(
            lambda: [d for d in session.client.diagnostics.get(uri, []) if d.data],
            10,
            "diagnostics",
        )

        # the editor saving its own text is not a change "outside the editor"
        text = WRONG_KERNEL.format(scale="1.9")
        session.open(kernel, text)
        kernel.write_text(text)
        await asyncio.sleep(1.5)
        assert len(watch_jobs()) == 2

        # a glob-matched reference re-runs too
        (workspace / "sub" / "ref_glob.py").write_text(
            TINY_REFERENCE.replace("N = 1024", "N = 128")
        )
        await session.wait_for(lambda: len(watch_jobs()) == 3, 30, "a glob-triggered run")
        glob_job = watch_jobs()[2]
        assert session.updates_for(glob_job)[0]["referenceUri"].endswith("sub/ref_glob.py")

        unwatched = await session.command("stark.unwatch", {"uri": uri})
        assert uri not in unwatched["watching"]


async def test_stopping_the_server_ends_its_jobs(workspace: Path) -> None:
    """An editor that goes away (SIGTERM, or stdin closed) must not leave engines behind."""
    async with lsp_session(workspace) as session:
        uri = session.open(workspace / "tiny_ref.py")
        job_id = (await session.command("stark.optimize", {"uri": uri, "rounds": 50}))["jobId"]
        running = await session.wait_for(
            lambda: [
                u for u in session.updates_for(job_id) if u["state"] == "running" and u["pid"]
            ],
            60,
            "the job to run",
        )
        pid = running[0]["pid"]
        tree = await session.wait_for(lambda: procs.process_tree(pid), 10, "the engine process")
        session.client._server.terminate()  # SIGTERM, no shutdown request
        await asyncio.wait_for(session.client._server.wait(), 30)
        for _ in range(50):
            if not any(procs.alive(p) for p in tree):
                break
            await asyncio.sleep(0.1)
        assert [p for p in tree if procs.alive(p)] == []
