"""Publishing a document's diagnostics: its static checks plus the last verdict's.
Sent at once when that costs the loop nothing; a large document's come from the
analysis worker (stark_lsp.analysis) and are sent only if the text is still the
same and no newer publish was asked for. Edits are debounced
(ANALYSIS_DEBOUNCE_S): a burst of didChange costs one analysis."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from stark_lsp import diagnostics
from stark_lsp.analysis import Analysis, Superseded, WorkerFailed, verdict_diagnostics_of
from stark_lsp.core import UserError, Verdict, path_to_uri, uri_to_path
from stark_lsp.tasks import DocumentKind

if TYPE_CHECKING:
    from stark_lsp.server import StarkLanguageServer

log = logging.getLogger(__name__)

ANALYSIS_DEBOUNCE_S = 0.15  # didChange: analyse and publish once typing pauses


class DiagnosticsPublisher:
    def __init__(self, server: StarkLanguageServer) -> None:
        self._server = server
        self._generation: dict[str, int] = {}  # the newest publish of a URI wins
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def cancel(self, uri: str) -> None:
        """Drop a debounced publish still waiting (the document closed or changed)."""
        timer = self._timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def publish_soon(self, uri: str) -> None:
        """Publish once edits pause (ANALYSIS_DEBOUNCE_S)."""
        self.cancel(uri)
        loop = asyncio.get_running_loop()
        self._timers[uri] = loop.call_later(ANALYSIS_DEBOUNCE_S, self.publish, uri)

    def publish(self, uri: str) -> None:
        """Static diagnostics of the current text plus the last verdict's, for one URI."""
        server = self._server
        self.cancel(uri)
        generation = self._generation.get(uri, 0) + 1
        self._generation[uri] = generation
        try:
            snapshot = server.snapshot(uri)
        except UserError:
            return
        analysis = server.documents.ready(uri, snapshot)
        verdict = self._verdict_for(uri, analysis)
        if analysis is not None and (verdict is None or analysis.info.tree is not None):
            found = list(analysis.static)
            if verdict is not None:
                found += diagnostics.verdict_diagnostics(
                    snapshot.text,
                    analysis.info,
                    verdict.result,
                    _verdict_data(uri, verdict),
                    verdict.files,
                )
            self._send(uri, snapshot.version, found)
            return
        server.background.spawn(self._publish_later(uri, generation), f"diagnostics of {uri}")

    def publish_path(self, path: Path, only_if_open: bool = False) -> None:
        uri = self._server.open_uri_for(path)
        if uri is None:
            if only_if_open or not path.is_file():
                return
            uri = path_to_uri(path)
        self.publish(uri)

    async def _publish_later(self, uri: str, generation: int) -> None:
        documents = self._server.documents
        try:
            analysis = await documents.current(uri)
            snapshot = self._server.snapshot(uri)
        except UserError:  # the file went away meanwhile
            return
        if snapshot.key != analysis.key and analysis.key[0] != "disk":
            return  # stale: the edit that made it so has its own publish coming
        found = list(analysis.static)
        verdict = self._verdict_for(uri, analysis)
        if verdict is not None:
            try:
                found += await documents.worker.run(
                    len(snapshot.text),
                    lambda: documents.is_current(uri, analysis.key),
                    verdict_diagnostics_of,
                    snapshot.text,
                    verdict.result,
                    _verdict_data(uri, verdict),
                    verdict.files,
                )
            except Superseded:
                return
            except WorkerFailed as exc:
                log.warning("verdict diagnostics of %s: %s", uri, exc)
        if self._generation.get(uri) != generation or not documents.is_current(uri, analysis.key):
            documents.stale_dropped += 1
            return
        self._send(uri, snapshot.version, found)

    def _verdict_for(self, uri: str, analysis: Analysis | None) -> Verdict | None:
        if not uri.startswith("file:"):
            return None
        if analysis is not None and analysis.info.kind is not DocumentKind.KERNEL:
            return None
        return self._server.verdicts.get(uri_to_path(uri))

    def _send(self, uri: str, version: int | None, found: list[types.Diagnostic]) -> None:
        self._server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=version)
        )


def _verdict_data(uri: str, verdict: Verdict) -> dict[str, Any]:
    return {"jobId": verdict.job_id, "nodeId": verdict.node_id, "uri": uri}
