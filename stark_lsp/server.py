"""The STARK language server's state, shared by the features: settings, jobs,
documents and their analyses, verdicts, the disk watcher. It registers no feature
(stark_lsp.app wires them) and answers every handler in well under a millisecond or
two: long work is an engine subprocess (stark_lsp.jobs) or the analysis worker. The
server process never imports torch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from engine.artifacts.events import Event
from stark_lsp import __version__, config
from stark_lsp.analysis import Analysis, DocumentAnalyses, Snapshot, disk_key
from stark_lsp.background import BackgroundTasks
from stark_lsp.core import UserError, Verdict, uri_to_path
from stark_lsp.disk_watch import WatchManager
from stark_lsp.job import Job
from stark_lsp.jobs import JobManager, UpdateListener
from stark_lsp.progress import ProgressTracker
from stark_lsp.publishing import DiagnosticsPublisher

log = logging.getLogger(__name__)


class StarkLanguageServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("stark-lsp", __version__)
        self.settings = config.Settings()
        self.background = BackgroundTasks()
        self.job_listeners: list[UpdateListener] = []  # features add theirs (app.py order)
        self.jobs = JobManager(self.settings.max_concurrent_jobs, self._on_job_update)
        self.progress = ProgressTracker(self, self._cancel_from_progress)
        self.verdicts: dict[Path, Verdict] = {}
        self.documents = DocumentAnalyses(self.snapshot)
        self.publisher = DiagnosticsPublisher(self)
        self.watcher = WatchManager(self)
        self._open_generation: dict[str, int] = {}  # bumped on close/forget: new keys

    # -- documents ----------------------------------------------------------------
    def open_uri_for(self, path: Path) -> str | None:
        for uri in self.workspace.text_documents:
            try:
                if uri.startswith("file:") and uri_to_path(uri) == path:
                    return uri
            except UserError:
                continue
        return None

    def text_of(self, uri: str) -> str:
        """The editor's text when the document is open, else the file on disk."""
        if uri in self.workspace.text_documents:
            return self.workspace.get_text_document(uri).source
        path = uri_to_path(uri)
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def snapshot(self, uri: str) -> Snapshot:
        """The document's text now, keyed by its version when it is open (hashing 5 MB
        on every request would cost milliseconds), by a digest when read from disk."""
        path = uri_to_path(uri) if uri.startswith("file:") else None
        if uri in self.workspace.text_documents:
            document = self.workspace.get_text_document(uri)
            text = document.source
            if document.version is not None:
                key = ("open", self._open_generation.get(uri, 0), document.version)
                return Snapshot(text, key, document.version, path)
            return Snapshot(text, disk_key(text), None, path)
        text = self.text_of(uri)
        return Snapshot(text, disk_key(text), None, path)

    async def analysis(self, uri: str) -> Analysis:
        """The analysis of the document's current text. Cheap, cached or small texts
        are answered at once; large ones come from the worker process while the loop
        keeps serving (stark_lsp.analysis)."""
        return await self.documents.current(uri)

    async def file_analysis(self, uri: str) -> tuple[Analysis, Path] | None:
        """(analysis, path) of a file document; None for another scheme or a file that
        cannot be read (a lens, hover or code action then simply offers nothing)."""
        if not uri.startswith("file:"):
            return None
        try:
            return await self.analysis(uri), uri_to_path(uri)
        except UserError:
            return None

    def forget(self, uri: str) -> None:
        """The document closed, or changed on disk: its next analysis starts afresh
        (a result still on its way for the old text will be dropped as stale)."""
        self._open_generation[uri] = self._open_generation.get(uri, 0) + 1
        self.documents.forget(uri)
        self.publisher.cancel(uri)

    # -- settings -------------------------------------------------------------------
    def apply_settings(self, data: Any, origin: str) -> None:
        self.settings, problems = config.merge(
            self.settings, data, allow_engine_command=origin == config.INIT_OPTIONS
        )
        log.info("settings from %s: %s", origin, self.settings.redacted())
        for problem in problems:
            self.window_show_message(
                types.ShowMessageParams(type=types.MessageType.Warning, message=f"STARK: {problem}")
            )
        self.jobs.set_max_concurrent(self.settings.max_concurrent_jobs)
        self.watcher.configure(self.settings.watch_globs, self.workspace_roots())

    def workspace_roots(self) -> list[Path]:
        roots: list[Path] = []
        try:
            workspace = self.workspace
        except RuntimeError:
            return roots
        for folder in workspace.folders.values():
            path = to_fs_path(folder.uri)
            if path:
                roots.append(Path(path).resolve())
        if not roots and workspace.root_path:
            roots.append(Path(workspace.root_path).resolve())
        return roots

    def require_trust(self) -> None:
        if not self.settings.trust:
            raise UserError(
                "this workspace is not trusted: STARK runs the reference and the generated "
                "kernels as code, so jobs are refused until you trust the workspace"
            )

    # -- job updates --------------------------------------------------------------------
    def _on_job_update(self, job: Job, event: Event | None) -> None:
        """Hand a job's change to every feature that follows jobs, in wiring order; one
        that fails is logged and the others still run."""
        for listener in self.job_listeners:
            try:
                listener(job, event)
            except Exception:  # noqa: BLE001 - a broken feature must not silence the rest
                log.exception("job listener %s failed for %s", listener, job.id)

    def _cancel_from_progress(self, job_id: str) -> None:
        async def cancel() -> None:
            try:
                await self.jobs.cancel(job_id)
            except Exception as exc:  # noqa: BLE001 - the job may have just finished
                log.info("progress cancel of %s: %s", job_id, exc)

        self.background.spawn(cancel(), f"progress cancel of {job_id}")
