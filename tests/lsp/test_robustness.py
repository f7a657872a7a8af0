"""Bad input and dying engines get clear errors, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException

from .helpers import lsp_session

DYING_ENGINE = """\
import json, os, sys
print(json.dumps({"event": "task_started", "task_id": "t", "ts": 0, "reference": sys.argv[2],
                  "task_dir": "/nonexistent", "rounds": 2, "agent": "offline", "model": "m",
                  "device": "cpu"}), flush=True)
print("engine: out of memory, giving up", file=sys.stderr, flush=True)
os._exit(3)
"""


async def _expect_error(session, command: str, *arguments: object, match: str) -> str:
    with pytest.raises(JsonRpcException) as info:
        await session.command(command, *arguments)
    message = str(info.value)
    assert match in message, message
    return message


async def test_bad_requests_get_clear_errors_and_server_keeps_serving(workspace: Path) -> None:
    (workspace / "notes.py").write_text("x = 1\n")
    (workspace / "orphan_kernel.py").write_text(
        "class ModelNew:\n    def forward(self, x):\n        return x\n"
    )
    ref_uri = (workspace / "tiny_ref.py").resolve().as_uri()
    async with lsp_session(workspace) as session:
        await _expect_error(
            session, "stark.cancel", {"jobId": "job-99"}, match="unknown jobId 'job-99'"
        )
        await _expect_error(session, "stark.applyBest", {"jobId": 7}, match="'jobId' must be str")
        await _expect_error(session, "stark.optimize", match="takes one object argument")
        await _expect_error(
            session, "stark.optimize", "file:///x.py", match="takes one object argument"
        )
        await _expect_error(
            session, "stark.optimize", {"uri": ref_uri}, {"x": 1}, match="takes one object"
        )
        await _expect_error(
            session,
            "stark.optimize",
            {"uri": ref_uri, "roundz": 3},
            match="unknown argument(s) roundz",
        )
        await _expect_error(
            session, "stark.optimize", {"uri": ref_uri, "rounds": "3"}, match="'rounds' must be int"
        )
        await _expect_error(
            session,
            "stark.optimize",
            {"uri": ref_uri, "rounds": True},
            match="'rounds' must be int",
        )
        await _expect_error(
            session, "stark.optimize", {"uri": ref_uri, "rounds": 0}, match="between 1 and 1000"
        )
        await _expect_error(
            session,
            "stark.optimize",
            {"uri": ref_uri, "agent": "gpt"},
            match="agent must be one of",
        )
        await _expect_error(
            session, "stark.optimize", {"uri": "untitled:Untitled-1"}, match="only file:// URIs"
        )
        await _expect_error(
            session,
            "stark.optimize",
            {"uri": "https://example.com/a.py"},
            match="only file:// URIs",
        )
        await _expect_error(
            session,
            "stark.optimize",
            {"uri": (workspace / "gone.py").as_uri()},
            match="does not exist",
        )
        await _expect_error(
            session,
            "stark.optimize",
            {"uri": (workspace / "notes.py").as_uri()},
            match="not a STARK task",
        )
        await _expect_error(session, "stark.debug", {"uri": ref_uri}, match="needs a kernel")
        await _expect_error(
            session,
            "stark.verify",
            {"uri": (workspace / "orphan_kernel.py").as_uri()},
            match="no reference found",
        )
        await _expect_error(session, "stark.unwatch", {"uri": ref_uri}, match="is not watched")
        await _expect_error(session, "stark.jobs", {"extra": 1}, match="takes no arguments")

        # still serving, and features on odd URIs answer empty rather than failing
        assert (await session.command("stark.jobs")) == {"jobs": []}
        lenses = await session.client.text_document_code_lens_async(
            types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri="untitled:1"))
        )
        assert not lenses


async def test_untrusted_workspace_refuses_jobs(workspace: Path) -> None:
    async with lsp_session(workspace, options={"trust": False}) as session:
        uri = (workspace / "tiny_ref.py").resolve().as_uri()
        await _expect_error(session, "stark.optimize", {"uri": uri}, match="not trusted")
        assert (await session.command("stark.jobs")) == {"jobs": []}


async def test_engine_that_dies_fails_the_job_with_a_clear_message(workspace: Path) -> None:
    engine = workspace / "dying_engine.py"
    engine.write_text(DYING_ENGINE)
    options = {"engineCommand": [sys.executable, str(engine)]}
    async with lsp_session(workspace, options=options) as session:
        uri = session.open(workspace / "tiny_ref.py")
        answer = await session.command("stark.optimize", {"uri": uri})
        final = await session.wait_job(answer["jobId"], timeout=60)
        assert final["state"] == "failed"
        assert final["error"] == (
            "engine exited with status 3 before finishing the task: engine: out of memory, giving up"
        )
        # the user is told, and the server keeps serving
        await session.wait_for(
            lambda: any("failed" in m.message for m in session.client.messages), 10, "showMessage"
        )
        second = await session.command("stark.optimize", {"uri": uri})
        assert second["jobId"] != answer["jobId"]
        assert (await session.wait_job(second["jobId"], timeout=60))["state"] == "failed"


async def test_settings_from_workspace_configuration(workspace: Path) -> None:
    configuration = {"stark": {"rounds": 4, "maxConcurrentJobs": 3, "apiKey": "sk-test-123"}}
    async with lsp_session(workspace, configuration=configuration) as session:
        # the server pulls `workspace/configuration` after `initialized`: poll for it
        info: dict = {}
        for _ in range(100):
            info = await session.command("stark.serverInfo")
            if info["settings"]["rounds"] == 4:
                break
            await asyncio.sleep(0.05)
        assert info["settings"]["rounds"] == 4 and info["settings"]["max_concurrent_jobs"] == 3
        assert "sk-test-123" not in json.dumps(info)
        assert info["settings"]["api_key"] == "<set>"


SLOW_DYING_ENGINE = """\
import sys, time
time.sleep(1.5)
print("engine: crashed", file=sys.stderr, flush=True)
sys.exit(1)
"""


async def test_queue_one_job_per_reference_and_json_less_verdicts(workspace: Path) -> None:
    engine = workspace / "slow_engine.py"
    engine.write_text(SLOW_DYING_ENGINE)
    (workspace / "other_ref.py").write_text((workspace / "tiny_ref.py").read_text())
    (workspace / "k.py").write_text(
        "# stark: reference=tiny_ref.py\nclass ModelNew:\n    def forward(self, x):\n        return x\n"
    )
    options = {"engineCommand": [sys.executable, str(engine)], "maxConcurrentJobs": 1}
    async with lsp_session(workspace, options=options) as session:
        first_uri = (workspace / "tiny_ref.py").resolve().as_uri()
        first = (await session.command("stark.optimize", {"uri": first_uri}))["jobId"]
        await _expect_error(
            session, "stark.optimize", {"uri": first_uri}, match=f"{first} is already"
        )
        second = (
            await session.command("stark.optimize", {"uri": (workspace / "other_ref.py").as_uri()})
        )["jobId"]
        final_first = await session.wait_job(first, timeout=60)
        final_second = await session.wait_job(second, timeout=60)
        assert final_first["state"] == final_second["state"] == "failed"
        # the second job only ran once the first had finished (maxConcurrentJobs = 1)
        order = [(u["jobId"], u["state"]) for u in session.job_updates]
        assert order.index((second, "running")) > order.index((first, "failed"))
        assert order.index((second, "queued")) < order.index((first, "failed"))

        verify = (await session.command("stark.verify", {"uri": (workspace / "k.py").as_uri()}))[
            "jobId"
        ]
        final = await session.wait_job(verify, timeout=60)
        assert final["state"] == "failed"
        assert (
            final["error"] == "engine exited with status 1 without a JSON verdict: engine: crashed"
        )


async def test_api_key_never_reaches_the_log_or_the_client(workspace: Path) -> None:
    key = "sk-test-do-not-log-4242"
    log_file = workspace / "server.log"
    engine = workspace / "dying_engine.py"
    engine.write_text(DYING_ENGINE)
    options = {"apiKey": key, "engineCommand": [sys.executable, str(engine)]}
    args = ["--log-file", str(log_file), "--log-level", "DEBUG"]
    async with lsp_session(workspace, options=options, server_args=args) as session:
        uri = session.open(workspace / "tiny_ref.py")
        job = (await session.command("stark.optimize", {"uri": uri}))["jobId"]
        await session.wait_job(job, timeout=60)
        await _expect_error(
            session, "stark.optimize", {"uri": uri, "bogus": key}, match="unknown argument"
        )
        info = await session.command("stark.serverInfo")
        seen_by_client = json.dumps(
            [info, session.job_updates, [m.message for m in session.client.messages]]
        )
    logged = log_file.read_text()
    assert "settings from initializationOptions" in logged  # the log is really written
    assert key not in logged
    assert key not in seen_by_client
