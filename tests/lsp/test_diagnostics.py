"""Diagnostics at the right lines: a broken reference (static, on open and
change) and failing kernels verified through the real `stark bench` (a C++
compile error inside a load_inline source string, a runtime exception, a wrong
answer); then the quick fix runs the real debug agent and proposes its edit."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types

from .helpers import TINY_REFERENCE, lsp_session

COMPILE_KERNEL = '''\
# stark: reference=tiny_ref.py
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

cpp_source = """
int twice(int x) {
    int y = x * 2
    return y;
}
"""

ext = load_inline(name="twice_ext", cpp_sources=cpp_source, no_implicit_headers=True)


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
'''

# A runtime error the offline debug agent repairs with a targeted edit (`.view(` on a
# non-contiguous tensor -> `.reshape(`); it no longer swaps in the reference.
RUNTIME_KERNEL = """\
# stark: reference=tiny_ref.py
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x * 1.5 + 0.25) * torch.sigmoid(x)
        flat = y.t().view(-1)
        return torch.clamp(flat.reshape(y.shape[1], y.shape[0]).t(), -0.5, 2.0)
"""

WRONG_KERNEL = """\
# stark: reference=tiny_ref.py
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * 1.5, -0.5, 2.0)
"""


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines()) if needle in line)


async def test_reference_diagnostics_on_open_and_change(workspace: Path) -> None:
    broken = TINY_REFERENCE.replace("y = x * 1.5 + 0.25", "y = x * (1.5 + 0.25")
    path = workspace / "tiny_ref.py"
    async with lsp_session(workspace) as session:
        uri = session.open(path, broken)
        await session.wait_for(lambda: session.client.diagnostics.get(uri), 10, "diagnostics")
        (diag,) = session.client.diagnostics[uri]
        assert diag.code == "syntax-error" and diag.range.start.line == _line_of(
            broken, "y = x * (1.5"
        )
        assert diag.source == "stark"

        no_inputs = TINY_REFERENCE.replace("def get_inputs()", "def make_inputs()")
        session.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=no_inputs)],
            )
        )
        await session.wait_for(
            lambda: [d for d in session.client.diagnostics[uri] if d.code == "missing-get_inputs"],
            10,
            "missing get_inputs",
        )
        (diag,) = session.client.diagnostics[uri]
        assert diag.range.start.line == _line_of(no_inputs, "class Model")


async def test_failing_kernels_after_verification_and_debug_fix(workspace: Path) -> None:
    kernels = {"compile": COMPILE_KERNEL, "runtime": RUNTIME_KERNEL, "wrong": WRONG_KERNEL}
    paths = {}
    for name, text in kernels.items():
        paths[name] = workspace / f"{name}_kernel.py"
        paths[name].write_text(text)
    async with lsp_session(workspace, options={"maxConcurrentJobs": 3}) as session:
        uris = {name: session.open(path) for name, path in paths.items()}
        jobs = {
            name: (await session.command("stark.verify", {"uri": uri}))["jobId"]
            for name, uri in uris.items()
        }
        for job_id in jobs.values():
            final = await session.wait_job(job_id, timeout=240)
            assert final["state"] == "done", final
            assert final["verdict"]["correct"] is False

        def verdicts(name: str) -> list[types.Diagnostic]:
            return [d for d in session.client.diagnostics.get(uris[name], []) if d.data]

        for name in kernels:
            await session.wait_for(lambda n=name: verdicts(n), 10, f"{name} diagnostics")

        # compile error: on the line inside the C++ string that gcc names (main.cpp:4)
        compile_diags = verdicts("compile")
        assert compile_diags[0].code == "compile-error"
        assert compile_diags[0].range.start.line == _line_of(COMPILE_KERNEL, "    return y;")
        assert "expected" in compile_diags[0].message and "main.cpp:4" in compile_diags[0].message
        data = compile_diags[0].data
        assert (
            data["jobId"] == jobs["compile"] and data["uri"] == uris["compile"] and "nodeId" in data
        )
        labels = [r.message for r in compile_diags[0].related_information]
        assert labels == ["full verification log", "standalone verify script"]
        log_uri = compile_diags[0].related_information[0].location.uri
        assert "error" in Path(log_uri.removeprefix("file://")).read_text()

        # runtime exception: on the traceback frame in the file
        (runtime,) = verdicts("runtime")
        assert runtime.range.start.line == _line_of(RUNTIME_KERNEL, "y.t().view(-1)")
        assert "view size is not compatible" in runtime.message

        # wrong answer: on `def forward`, with the max abs error
        (wrong,) = verdicts("wrong")
        assert wrong.range.start.line == _line_of(WRONG_KERNEL, "def forward")
        assert "max abs err" in wrong.message

        # hover on ModelNew shows the verdict
        hover = await session.client.text_document_hover_async(
            types.HoverParams(
                text_document=types.TextDocumentIdentifier(uri=uris["runtime"]),
                position=types.Position(
                    line=_line_of(RUNTIME_KERNEL, "class ModelNew"), character=7
                ),
            )
        )
        assert (
            hover is not None
            and "incorrect" in hover.contents.value
            and "view size is not compatible" in hover.contents.value
        )

        # quick fix on the failing diagnostic -> the real debug agent -> an edit to accept
        actions = await session.client.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uris["runtime"]),
                range=runtime.range,
                context=types.CodeActionContext(diagnostics=[runtime]),
            )
        )
        (fix,) = [a for a in actions if a.title == "Fix with STARK debug agent"]
        assert fix.kind == types.CodeActionKind.QuickFix and fix.command.command == "stark.debug"
        lenses = await session.client.text_document_code_lens_async(
            types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uris["runtime"]))
        )
        assert "Fix with STARK debug agent" in [lens.command.title for lens in lenses]

        answer = await session.command(fix.command.command, *fix.command.arguments)
        final = await session.wait_job(answer["jobId"], timeout=240)
        assert final["state"] == "done" and final["fixAvailable"], final
        await session.wait_for(lambda: session.applied_edits, 30, "the proposed fix")
        (proposal,) = session.applied_edits
        assert proposal.edit.change_annotations["stark"].needs_confirmation is True
        (doc_edit,) = proposal.edit.document_changes
        new_text = doc_edit.edits[0].new_text
        # the reference comment is kept (after the agent's note of what it edited)
        assert "# stark: reference=tiny_ref.py" in new_text.splitlines()[:2]
        assert "class ModelNew" in new_text
        assert "y.t().view(-1)" not in new_text and "y.t().reshape(-1)" in new_text
