"""Helpers for the language-server tests: a real `python -m stark_lsp`
subprocess driven by pytest-lsp's client, tiny task files, and bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from lsprotocol import types
from pygls.protocol import default_converter
from pytest_lsp import ClientServerConfig, LanguageClient
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features

SERVER_COMMAND = [sys.executable, "-P", "-m", "stark_lsp"]
FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


def fake_engine_command(state: Path) -> list[str]:
    """`engineCommand` for tests/lsp/fake_engine.py, recording into `state`."""
    state.mkdir(parents=True, exist_ok=True)
    return [sys.executable, str(FAKE_ENGINE), "--state", str(state)]


TINY_REFERENCE = '''\
"""An elementwise chain big enough (1024²) that a fused kernel beats it beyond noise."""

import torch
import torch.nn as nn

N = 1024


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 1.5 + 0.25
        y = torch.relu(y) * torch.sigmoid(x)
        return torch.clamp(y, -0.5, 2.0)


def get_inputs() -> list[torch.Tensor]:
    return [torch.randn(N, N)]


def get_init_inputs() -> list:
    return []
'''


def full_capabilities(
    *, document_changes: bool = True, annotations: bool = True, progress: bool = True
) -> types.ClientCapabilities:
    """A VS Code-like client (or less, for the fallback paths)."""
    return types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True,
            configuration=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(
                document_changes=document_changes,
                resource_operations=[types.ResourceOperationKind.Create]
                if document_changes
                else None,
                change_annotation_support=types.ChangeAnnotationsSupportOptions(
                    groups_on_label=True
                )
                if annotations
                else None,
            ),
        ),
        window=types.WindowClientCapabilities(work_done_progress=progress),
    )


class RecordingClient(LanguageClient):
    """pytest-lsp's client that also keeps every publishDiagnostics, with its version
    (pytest-lsp keeps only the latest diagnostics of each URI)."""

    published: list[types.PublishDiagnosticsParams]


def _publish_diagnostics(client: RecordingClient, params: types.PublishDiagnosticsParams) -> None:
    client.diagnostics[params.uri] = params.diagnostics
    client.published.append(params)


def recording_client() -> RecordingClient:
    client = RecordingClient(converter_factory=default_converter)
    client.published = []
    register_lsp_features(
        client,
        {**DEFAULT_CLIENT_FEATURES, types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: _publish_diagnostics},
    )
    return client


@dataclass
class Session:
    """A started server plus everything it sent us."""

    client: RecordingClient
    root: Path
    job_updates: list[dict[str, Any]] = field(default_factory=list)
    applied_edits: list[types.ApplyWorkspaceEditParams] = field(default_factory=list)
    apply_answer: bool = True

    def published_for(self, uri: str) -> list[types.PublishDiagnosticsParams]:
        return [p for p in self.client.published if p.uri == uri]

    async def command(self, name: str, *arguments: Any) -> Any:
        return await self.client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(arguments))
        )

    def updates_for(self, job_id: str) -> list[dict[str, Any]]:
        return [u for u in self.job_updates if u["jobId"] == job_id]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `predicate` until truthy; fail with `what` after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                states = [(u["jobId"], u["state"], u.get("error")) for u in self.job_updates[-5:]]
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; last updates {states}"
                )
            await asyncio.sleep(0.05)

    async def wait_job(self, job_id: str, timeout: float = 240) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            for update in self.updates_for(job_id):
                if update["state"] in ("done", "failed", "cancelled"):
                    return update
            return None

        return await self.wait_for(final, timeout, f"{job_id} to finish")

    def open(self, path: Path, text: str | None = None) -> str:
        uri = path.resolve().as_uri()
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri,
                    language_id="python",
                    version=1,
                    text=path.read_text() if text is None else text,
                )
            )
        )
        return uri


def _apply_to_disk(edit: types.WorkspaceEdit) -> None:
    """What an editor does with our edits, for whole-file writes (enough for these tests)."""
    from pygls.uris import to_fs_path

    for change in edit.document_changes or []:
        if isinstance(change, types.CreateFile):
            path = Path(to_fs_path(change.uri))
            if not path.exists() or (change.options and change.options.overwrite):
                path.write_text("")
        elif isinstance(change, types.TextDocumentEdit):
            path = Path(to_fs_path(change.text_document.uri))
            (only,) = change.edits
            path.write_text(only.new_text)
    for uri, text_edits in (edit.changes or {}).items():
        path = Path(to_fs_path(uri))
        (only,) = text_edits
        path.write_text(only.new_text)


@contextlib.asynccontextmanager
async def lsp_session(
    root: Path,
    *,
    capabilities: types.ClientCapabilities | None = None,
    options: dict[str, Any] | None = None,
    configuration: dict[str, Any] | None = None,
    server_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Session]:
    """Start `python -m stark_lsp`, initialize it with `root` as the workspace, and
    always shut it down (which cancels any job still running). `env` adds to the
    server's environment."""
    command = [*SERVER_COMMAND, *(server_args or [])]
    server_env = {**os.environ, **env} if env is not None else None
    client = await ClientServerConfig(
        server_command=command, server_env=server_env, client_factory=recording_client
    ).start()
    _fix_code_action_union(client)
    session = Session(client=client, root=root)
    if configuration is not None:
        client.set_configuration(configuration)

    @client.feature("stark/jobUpdated")
    def on_job_updated(params: Any) -> None:
        session.job_updates.append(_as_dict(params))

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        session.applied_edits.append(params)
        if session.apply_answer:
            _apply_to_disk(params.edit)
        return types.ApplyWorkspaceEditResult(applied=session.apply_answer)

    init_options = {"outDir": str(root / "stark_runs"), "agent": "offline", "device": "cpu"}
    init_options.update(options or {})
    await client.initialize_session(
        types.InitializeParams(
            capabilities=capabilities or full_capabilities(),
            root_uri=root.resolve().as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.resolve().as_uri(), name="ws")],
            initialization_options=init_options,
        )
    )
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.shutdown_session(), 30)
        with contextlib.suppress(Exception):
            await client.stop()


def _fix_code_action_union(client: LanguageClient) -> None:
    """lsprotocol 2025's client-side converter turns every CodeAction in a
    `(Command | CodeAction)[]` answer into a Command (stringifying its command);
    tell them apart the way the spec does: a Command's `command` is a string."""
    converter = client.protocol._converter

    def structure(obj: Any, _: Any) -> types.Command | types.CodeAction:
        if isinstance(obj, dict) and not isinstance(obj.get("command"), str):
            return converter.structure(obj, types.CodeAction)
        return converter.structure(obj, types.Command)

    converter.register_structure_hook(types.Command | types.CodeAction, structure)
    converter.register_structure_hook(Union[types.Command, types.CodeAction], structure)  # noqa: UP007


def _as_dict(params: Any) -> Any:
    """pygls hands custom notifications over as namedtuples: back to plain JSON."""
    if hasattr(params, "_asdict"):
        return {k: _as_dict(v) for k, v in params._asdict().items()}
    if isinstance(params, dict):
        return {k: _as_dict(v) for k, v in params.items()}
    if isinstance(params, list | tuple):
        return [_as_dict(v) for v in params]
    return params
