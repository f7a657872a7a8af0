"""Documents and their diagnostics: static diagnostics on open/save and, debounced,
on change (stark_lsp.publishing; analysis of large documents runs off the loop), and
each new verdict (a node benchmarked by a search, a finished verification or debug
job) recorded for its kernel file and published with links to its trace."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from engine.artifacts.events import NodeBenchmarked
from stark_lsp import launch
from stark_lsp.core import Verdict, trace_links
from stark_lsp.job import Job, JobKind
from stark_lsp.server import StarkLanguageServer


def record_verdicts(server: StarkLanguageServer, job: Job, event: Any) -> None:
    """Job listener: keep the newest verdict of every kernel file the job judged."""
    if isinstance(event, NodeBenchmarked):
        node = job.results.get(event.node.id)
        if node is not None and node.code_path is not None:
            path = node.code_path.resolve()
            server.verdicts[path] = Verdict(
                node.result, job.id, event.node.id, trace_links(node.trace_files), job.reference
            )
            server.publisher.publish_path(path, only_if_open=True)
    if job.active or job.kind is JobKind.OPTIMIZE:
        return
    if job.verdict is None or job.kernel is None:
        return
    files = trace_links(launch.write_verify_artifacts(server, job))
    kernel = job.kernel.resolve()
    server.verdicts[kernel] = Verdict(job.verdict, job.id, None, files, job.reference)
    server.publisher.publish_path(kernel)


def register(server: StarkLanguageServer) -> None:
    server.job_listeners.append(lambda job, event: record_verdicts(server, job, event))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def on_open(ls: StarkLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.publisher.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def on_change(ls: StarkLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.publisher.publish_soon(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def on_save(ls: StarkLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.publisher.publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def on_close(ls: StarkLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.forget(params.text_document.uri)
