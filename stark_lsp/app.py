"""Wiring: build the server and register every feature on it. The order of
registration is the order in which job listeners hear a job's change: verdicts are
recorded (documents) before a fix is proposed (code_actions), the client is told
(job_status), and lenses are refreshed last, so they show the new state."""

from __future__ import annotations

from stark_lsp.features import (
    code_actions,
    commands,
    documents,
    hover,
    job_status,
    lenses,
    lifecycle,
    watch,
)
from stark_lsp.server import StarkLanguageServer

FEATURES = (lifecycle, documents, code_actions, job_status, lenses, hover, commands, watch)


def create_server() -> StarkLanguageServer:
    server = StarkLanguageServer()
    for feature in FEATURES:
        feature.register(server)
    return server
