"""The session's lifecycle: settings on initialize/initialized/didChangeConfiguration,
progress cancellation from the client, and a clean stop of every job on shutdown."""

from __future__ import annotations

import asyncio
import logging

from lsprotocol import types

from stark_lsp import config, textdoc
from stark_lsp.server import StarkLanguageServer

log = logging.getLogger(__name__)


def register(server: StarkLanguageServer) -> None:
    @server.feature(types.INITIALIZE)
    def on_initialize(ls: StarkLanguageServer, params: types.InitializeParams) -> None:
        textdoc.install(ls.workspace)  # pygls has just created it; edits of big files
        ls.apply_settings(params.initialization_options, config.INIT_OPTIONS)

    @server.feature(types.INITIALIZED)
    async def on_initialized(ls: StarkLanguageServer, params: types.InitializedParams) -> None:
        await pull_configuration(ls)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def on_configuration(
        ls: StarkLanguageServer, params: types.DidChangeConfigurationParams
    ) -> None:
        settings = params.settings
        if isinstance(settings, dict) and isinstance(settings.get("stark"), dict):
            ls.apply_settings(settings["stark"], "didChangeConfiguration")
        else:
            await pull_configuration(ls)

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def on_progress_cancel(
        ls: StarkLanguageServer, params: types.WorkDoneProgressCancelParams
    ) -> None:
        ls.progress.on_client_cancel(params.token)

    @server.feature(types.SHUTDOWN)
    async def on_shutdown(ls: StarkLanguageServer, *args: object) -> None:
        ls.watcher.stop()
        await ls.documents.aclose()
        await ls.jobs.shutdown()


async def pull_configuration(ls: StarkLanguageServer) -> None:
    """Ask for the `stark` section when the client can answer `workspace/configuration`."""
    caps = ls.client_capabilities
    workspace = getattr(caps, "workspace", None) if caps else None
    if not (workspace and workspace.configuration):
        return
    try:
        result = await asyncio.wait_for(
            ls.workspace_configuration_async(
                types.ConfigurationParams(items=[types.ConfigurationItem(section="stark")])
            ),
            10,
        )
    except Exception as exc:  # noqa: BLE001 - keep serving with what we have
        log.warning("workspace/configuration failed: %s", exc)
        return
    if result:
        ls.apply_settings(result[0], "workspace/configuration")
