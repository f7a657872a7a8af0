"""Re-runs after a watched file changed on disk outside the editor (the watcher
itself, globs and watchdog, is stark_lsp.disk_watch): re-verify, or re-optimize a
reference when `stark.autoRun` is on. A re-run replaces the file's active job."""

from __future__ import annotations

from pathlib import Path

from stark_lsp import launch
from stark_lsp.core import path_to_uri
from stark_lsp.job import Job
from stark_lsp.server import StarkLanguageServer


async def rerun_for_disk_change(server: StarkLanguageServer, path: Path) -> Job | None:
    uri = server.open_uri_for(path) or path_to_uri(path)
    server.forget(uri)
    server.publisher.publish(uri)
    reference, kernel = await launch.reference_of(server, uri, path)
    if server.settings.auto_run and kernel is None:
        return await launch.start_optimize(server, uri, reference, {}, origin="watch")
    target = launch.verification_target(reference, kernel)
    return await launch.start_verify(server, uri, reference, target, origin="watch")


def register(server: StarkLanguageServer) -> None:
    async def on_change(path: Path) -> Job | None:
        return await rerun_for_disk_change(server, path)

    server.watcher.on_change = on_change
