"""Writing files through the client (`workspace/applyEdit`), so the user sees and
accepts every change. What we send depends on what the client declares:

- `documentChanges` + resource operation `create`: a CreateFile then a
  TextDocumentEdit, both tied to a change annotation with `needsConfirmation`
  when `changeAnnotationSupport` is declared (VS Code shows a preview first);
- otherwise plain `changes` (Neovim 0.7 declares neither `documentChanges` nor
  annotations). A `changes` edit cannot create a file, so when the target does
  not exist yet the server creates it *empty* on disk first and the client fills
  it; if the client then refuses the edit, that empty file is removed again.
  Neovim applies the edit to a buffer: `:w` (or `:wall`) saves it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lsprotocol import types

from stark_lsp.core import path_to_uri
from stark_lsp.tasks import REFERENCE_COMMENT

if TYPE_CHECKING:
    from stark_lsp.server import StarkLanguageServer

ANNOTATION_ID = "stark"


@dataclass(slots=True)
class ApplyOutcome:
    applied: bool
    reason: str | None = None


def with_reference_comment(code: str, target: Path, reference: Path) -> str:
    """Prepend `# stark: reference=...` so the applied kernel still finds its reference."""
    if REFERENCE_COMMENT.search(code):
        lines = [
            line for line in code.splitlines(keepends=True) if not REFERENCE_COMMENT.search(line)
        ]
        code = "".join(lines)
    relative = os.path.relpath(reference, target.parent)
    return f"# stark: reference={Path(relative).as_posix()}\n{code}"


def keep_reference_comment(original: str, fixed: str) -> str:
    """A fix must not lose the kernel's `# stark: reference=` line."""
    if REFERENCE_COMMENT.search(fixed):
        return fixed
    for line in original.splitlines(keepends=True):
        if REFERENCE_COMMENT.search(line) and line.lstrip().startswith("#"):
            return line + fixed
    return fixed


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def full_range(text: str) -> types.Range:
    """The range covering all of `text` (UTF-16 columns, as LSP counts by default)."""
    lines = text.split("\n")
    return types.Range(
        start=types.Position(line=0, character=0),
        end=types.Position(line=len(lines) - 1, character=_utf16_len(lines[-1])),
    )


def _workspace_edit_caps(
    server: StarkLanguageServer,
) -> types.WorkspaceEditClientCapabilities | None:
    caps = server.client_capabilities
    workspace = getattr(caps, "workspace", None) if caps else None
    return getattr(workspace, "workspace_edit", None) if workspace else None


def supports_document_changes(server: StarkLanguageServer, create: bool) -> bool:
    caps = _workspace_edit_caps(server)
    if caps is None or not caps.document_changes:
        return False
    if create:
        return types.ResourceOperationKind.Create in (caps.resource_operations or [])
    return True


def supports_annotations(server: StarkLanguageServer) -> bool:
    caps = _workspace_edit_caps(server)
    return bool(caps and caps.change_annotation_support is not None)


def _current_text(server: StarkLanguageServer, target: Path) -> tuple[str | None, int | None]:
    uri = server.open_uri_for(target)
    if uri is not None:
        document = server.workspace.get_text_document(uri)
        return document.source, document.version
    try:
        return target.read_text(encoding="utf-8"), None
    except OSError:
        return None, None


async def _send(server: StarkLanguageServer, edit: types.WorkspaceEdit, label: str) -> ApplyOutcome:
    try:
        result = await server.workspace_apply_edit_async(
            types.ApplyWorkspaceEditParams(edit=edit, label=label)
        )
    except Exception as exc:  # noqa: BLE001 - the client failed or refused the request
        return ApplyOutcome(False, f"client could not apply the edit: {exc}")
    if result is None:
        return ApplyOutcome(False, "client gave no answer")
    return ApplyOutcome(bool(result.applied), result.failure_reason)


async def write_file_via_client(
    server: StarkLanguageServer, target: Path, content: str, label: str
) -> ApplyOutcome:
    """Create or overwrite `target` with `content`, through the client."""
    uri = server.open_uri_for(target) or path_to_uri(target)
    current, version = _current_text(server, target)
    if supports_document_changes(server, create=True):
        annotated = supports_annotations(server)
        annotation_id = ANNOTATION_ID if annotated else None
        changes: list = [
            types.CreateFile(
                uri=uri,
                options=types.CreateFileOptions(overwrite=True),
                annotation_id=annotation_id,
            )
        ]
        text_edit: types.TextEdit = (
            types.AnnotatedTextEdit(
                range=full_range(""), new_text=content, annotation_id=ANNOTATION_ID
            )
            if annotated
            else types.TextEdit(range=full_range(""), new_text=content)
        )
        changes.append(
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=None),
                edits=[text_edit],
            )
        )
        edit = types.WorkspaceEdit(
            document_changes=changes,
            change_annotations={
                ANNOTATION_ID: types.ChangeAnnotation(
                    label=label, needs_confirmation=True, description=str(target)
                )
            }
            if annotated
            else None,
        )
        return await _send(server, edit, label)
    created_here = False
    if current is None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x", encoding="utf-8"):
                pass
            created_here = True
            current = ""
        except FileExistsError:
            current = target.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return ApplyOutcome(False, f"cannot create {target}: {exc.strerror or exc}")
    edit = types.WorkspaceEdit(
        changes={uri: [types.TextEdit(range=full_range(current), new_text=content)]}
    )
    outcome = await _send(server, edit, label)
    if not outcome.applied and created_here:
        with contextlib.suppress(OSError):
            if target.stat().st_size == 0:
                target.unlink()
    return outcome


async def replace_file_via_client(
    server: StarkLanguageServer, target: Path, content: str, label: str
) -> ApplyOutcome:
    """Replace an existing file's whole text (e.g. the debug agent's fix)."""
    uri = server.open_uri_for(target) or path_to_uri(target)
    current, version = _current_text(server, target)
    if current is None:
        return ApplyOutcome(False, f"{target} no longer exists")
    content = keep_reference_comment(current, content)
    annotated = supports_annotations(server) and supports_document_changes(server, create=False)
    if annotated:
        edit = types.WorkspaceEdit(
            document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(
                        uri=uri, version=version
                    ),
                    edits=[
                        types.AnnotatedTextEdit(
                            range=full_range(current), new_text=content, annotation_id=ANNOTATION_ID
                        )
                    ],
                )
            ],
            change_annotations={
                ANNOTATION_ID: types.ChangeAnnotation(label=label, needs_confirmation=True)
            },
        )
    else:
        edit = types.WorkspaceEdit(
            changes={uri: [types.TextEdit(range=full_range(current), new_text=content)]}
        )
    return await _send(server, edit, label)


def replace_edit(uri: str, current: str, content: str) -> types.WorkspaceEdit:
    """A plain whole-file replacement (used inside code actions)."""
    return types.WorkspaceEdit(
        changes={uri: [types.TextEdit(range=full_range(current), new_text=content)]}
    )
