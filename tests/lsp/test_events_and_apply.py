"""Malformed engine output is skipped (and logged once), not fatal; and a best
kernel is only offered for applying when it beats the reference (here with the
summary of an engine older than the re-measurement; test_best_remeasured.py has the
newer one). The engine is tests/lsp/fake_engine.py (through the `engineCommand` hook)."""

from __future__ import annotations

import json
from pathlib import Path

from lsprotocol import types

from .helpers import Session, fake_engine_command, lsp_session


async def _lenses(session: Session, uri: str) -> list[types.CodeLens]:
    return await session.client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )


async def _action_titles(session: Session, uri: str) -> list[str]:
    actions = await session.client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=types.Position(9, 0), end=types.Position(9, 0)),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    return [a.title for a in actions]


async def _optimize(session: Session, uri: str) -> dict:
    job_id = (await session.command("stark.optimize", {"uri": uri}))["jobId"]
    return await session.wait_job(job_id, timeout=60)


async def test_bad_event_lines_are_skipped_and_slower_best_is_not_offered(workspace: Path) -> None:
    state = workspace.parent / "engine_state"
    (state / "scenario.json").parent.mkdir(parents=True, exist_ok=True)
    # the summary of an engine without re-measurement: its final figure counts as before
    (state / "scenario.json").write_text(json.dumps({"speedup": 0.91, "legacy": True}))
    log_file = workspace.parent / "server.log"
    options = {"engineCommand": fake_engine_command(state)}
    args = ["--log-file", str(log_file), "--log-level", "INFO"]
    async with lsp_session(workspace, options=options, server_args=args) as session:
        uri = session.open(workspace / "tiny_ref.py")
        slower = await _optimize(session, uri)
        # three malformed lines did not end the job; the node with a field this server
        # does not know about was still read
        assert slower["state"] == "done", slower
        assert [n["id"] for n in slower["tree"]] == [1]
        assert slower["bestSpeedup"] == 0.91

        lenses = await _lenses(session, uri)
        titles = {lens.command.title: lens.command.command for lens in lenses}
        assert titles.get("best 0.91x (no faster kernel found)") == ""
        assert "stark.applyBest" not in titles.values()
        assert not [t for t in await _action_titles(session, uri) if t.startswith("Apply best")]

        # asked for explicitly, it is applied, but the confirmation does not say "faster"
        result = await session.command("stark.applyBest", {"jobId": slower["jobId"]})
        assert result["applied"] is True
        label = session.applied_edits[-1].edit.change_annotations["stark"].label
        assert "not faster than the reference" in label and "0.91x" in label

        # a faster best kernel is offered as a lens and as a code action
        (state / "scenario.json").write_text(json.dumps({"speedup": 1.5, "legacy": True}))
        faster = await _optimize(session, uri)
        assert faster["state"] == "done" and faster["bestSpeedup"] == 1.5
        lenses = await _lenses(session, uri)
        apply = [lens.command for lens in lenses if lens.command.command == "stark.applyBest"]
        assert [(c.title, list(c.arguments or [])) for c in apply] == [
            ("best 1.50x — apply", [{"jobId": faster["jobId"]}])
        ]
        assert "Apply best kernel (1.50x faster)" in await _action_titles(session, uri)
        assert (await session.command("stark.jobs"))["jobs"][-1]["state"] == "done"

    logged = log_file.read_text()
    for job_id in (slower["jobId"], faster["jobId"]):
        skipped = [line for line in logged.splitlines() if f"job {job_id}: skipped" in line]
        assert len(skipped) == 1, skipped  # logged once per job, the rest only counted
        assert f"job {job_id}: 3 event lines were skipped" in logged
