"""The STARK language server: state shared by the features, and their
registration. Long work never runs here: every job is an engine subprocess
(stark_lsp.jobs) and every handler returns in well under a millisecond or two.
The server process never imports torch."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from engine.bench.result import EvalResult
from stark_lsp import __version__, config, diagnostics, notifications
from stark_lsp.analysis import (
    Analysis,
    DocumentAnalyses,
    Snapshot,
    Superseded,
    WorkerFailed,
    disk_key,
    verdict_diagnostics_of,
)
from stark_lsp.background import BackgroundTasks
from stark_lsp.diagnostics import RelatedFile
from stark_lsp.jobs import Job, JobKind, JobManager, JobState
from stark_lsp.progress import ProgressTracker
from stark_lsp.tasks import DocumentKind
from stark_lsp.watch import WatchManager

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ANALYSIS_DEBOUNCE_S = 0.15  # didChange: analyse and publish once typing pauses


class UserError(Exception):
    """Bad input from the client; becomes a JSON-RPC error with this message."""


@dataclass(slots=True)
class Verdict:
    """The last verdict known for one kernel file, and where it came from."""

    result: EvalResult
    job_id: str
    node_id: int | None
    files: list[RelatedFile] = field(default_factory=list)
    reference: Path | None = None


def uri_to_path(uri: Any) -> Path:
    """A file URI as an absolute path, or a UserError that says what is wrong."""
    if not isinstance(uri, str) or not uri:
        raise UserError(f"uri must be a non-empty string, not {uri!r}")
    if not uri.startswith("file:"):
        scheme = uri.split(":", 1)[0] if ":" in uri else uri
        raise UserError(
            f"only file:// URIs are supported, not {scheme!r} ({uri}); save the file first"
        )
    fs_path = to_fs_path(uri)
    if not fs_path:
        raise UserError(f"cannot turn {uri!r} into a file path")
    return Path(fs_path).resolve()


def path_to_uri(path: Path) -> str:
    return from_fs_path(str(path)) or path.as_uri()


class StarkLanguageServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("stark-lsp", __version__)
        self.settings = config.Settings()
        self.background = BackgroundTasks()
        self.jobs = JobManager(self.settings.max_concurrent_jobs, self._on_job_update)
        self.progress = ProgressTracker(self, self._cancel_from_progress)
        self.verdicts: dict[Path, Verdict] = {}
        self.documents = DocumentAnalyses(self.snapshot)
        self._open_generation: dict[str, int] = {}  # bumped on close/forget: new keys
        self._publish_generation: dict[str, int] = {}  # the newest publish of a URI wins
        self._publish_timers: dict[str, asyncio.TimerHandle] = {}
        self.watcher = WatchManager(self)

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

    def forget(self, uri: str) -> None:
        """The document closed, or changed on disk: its next analysis starts afresh
        (a result still on its way for the old text will be dropped as stale)."""
        self._open_generation[uri] = self._open_generation.get(uri, 0) + 1
        self.documents.forget(uri)
        timer = self._publish_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def publish_soon(self, uri: str) -> None:
        """Publish once edits pause (ANALYSIS_DEBOUNCE_S): a burst of didChange costs
        one analysis, not one per keystroke."""
        timer = self._publish_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._publish_timers[uri] = loop.call_later(ANALYSIS_DEBOUNCE_S, self.publish, uri)

    def publish(self, uri: str) -> None:
        """Static diagnostics of the current text plus the last verdict's, for one URI.
        Sent at once when that costs the loop nothing; otherwise computed off the loop
        and sent only if the text is still the same and no newer publish was asked for."""
        timer = self._publish_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()
        generation = self._publish_generation.get(uri, 0) + 1
        self._publish_generation[uri] = generation
        try:
            snapshot = self.snapshot(uri)
        except UserError:
            return
        analysis = self.documents.ready(uri, snapshot)
        verdict = self._verdict_for(uri, analysis)
        if analysis is not None and (verdict is None or analysis.info.tree is not None):
            found = list(analysis.static)
            if verdict is not None:
                found += diagnostics.verdict_diagnostics(
                    snapshot.text,
                    analysis.info,
                    verdict.result,
                    self._verdict_data(uri, verdict),
                    verdict.files,
                )
            self._send_diagnostics(uri, snapshot.version, found)
            return
        self.background.spawn(self._publish_later(uri, generation), f"diagnostics of {uri}")

    async def _publish_later(self, uri: str, generation: int) -> None:
        try:
            analysis = await self.documents.current(uri)
            snapshot = self.snapshot(uri)
        except UserError:  # the file went away meanwhile
            return
        if snapshot.key != analysis.key and analysis.key[0] != "disk":
            return  # stale: the edit that made it so has its own publish coming
        found = list(analysis.static)
        verdict = self._verdict_for(uri, analysis)
        if verdict is not None:
            try:
                found += await self.documents.worker.run(
                    len(snapshot.text),
                    lambda: self.documents.is_current(uri, analysis.key),
                    verdict_diagnostics_of,
                    snapshot.text,
                    verdict.result,
                    self._verdict_data(uri, verdict),
                    verdict.files,
                )
            except Superseded:
                return
            except WorkerFailed as exc:
                log.warning("verdict diagnostics of %s: %s", uri, exc)
        if self._publish_generation.get(uri) != generation or not self.documents.is_current(
            uri, analysis.key
        ):
            self.documents.stale_dropped += 1
            return
        self._send_diagnostics(uri, snapshot.version, found)

    def _verdict_for(self, uri: str, analysis: Analysis | None) -> Verdict | None:
        if not uri.startswith("file:"):
            return None
        if analysis is not None and analysis.info.kind is not DocumentKind.KERNEL:
            return None
        return self.verdicts.get(uri_to_path(uri))

    @staticmethod
    def _verdict_data(uri: str, verdict: Verdict) -> dict[str, Any]:
        return {"jobId": verdict.job_id, "nodeId": verdict.node_id, "uri": uri}

    def _send_diagnostics(
        self, uri: str, version: int | None, found: list[types.Diagnostic]
    ) -> None:
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=found, version=version)
        )

    def publish_path(self, path: Path, only_if_open: bool = False) -> None:
        uri = self.open_uri_for(path)
        if uri is None:
            if only_if_open or not path.is_file():
                return
            uri = path_to_uri(path)
        self.publish(uri)

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

    # -- engine invocation --------------------------------------------------------------
    def engine_argv(self, *args: str) -> list[str]:
        base = list(self.settings.engine_command or (sys.executable, "-m", "engine"))
        return [*base, *args]

    def engine_env(self, calls_model: bool) -> dict[str, str]:
        """The environment of one engine job. Only a job that calls a model gets the API
        key. Every other job (a `stark bench` verification, an offline-agent run) runs
        untrusted kernels without needing any secret, so it gets no variable whose name
        says it holds one (config.is_secret_name), from our environment or the client."""
        env = dict(os.environ)
        if not calls_model:
            env = {name: value for name, value in env.items() if not config.is_secret_name(name)}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p
        )
        key = self.settings.api_key
        if key and calls_model:  # handed over by the client: only ever in the child's env
            env["STARK_API_KEY"] = key
            env["OPENAI_API_KEY"] = key
        return env

    def out_dir_for(self, reference: Path) -> Path:
        if self.settings.out_dir:
            out = Path(self.settings.out_dir).expanduser()
            if not out.is_absolute():
                roots = self.workspace_roots()
                out = (roots[0] if roots else reference.parent) / out
            return out
        for root in self.workspace_roots():
            if reference.is_relative_to(root):
                return root / "stark_runs"
        return reference.parent / "stark_runs"

    def materialize(self, path: Path, uri: str) -> Path:
        """The file the engine should read: the editor's unsaved text if it differs from disk."""
        if uri not in self.workspace.text_documents:
            return path
        text = self.workspace.get_text_document(uri).source
        try:
            on_disk = path.read_text(encoding="utf-8")
        except OSError:
            on_disk = None
        if on_disk == text:
            return path
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        snapshot_dir = self.out_dir_for(path) / ".lsp" / "snapshots" / digest
        snapshot_dir.mkdir(parents=True, exist_ok=True)
        snapshot = snapshot_dir / path.name
        snapshot.write_text(text, encoding="utf-8")
        return snapshot

    # -- job updates --------------------------------------------------------------------
    def _cancel_from_progress(self, job_id: str) -> None:
        async def cancel() -> None:
            try:
                await self.jobs.cancel(job_id)
            except Exception as exc:  # noqa: BLE001 - the job may have just finished
                log.info("progress cancel of %s: %s", job_id, exc)

        self.background.spawn(cancel(), f"progress cancel of {job_id}")

    def _on_job_update(self, job: Job, event: Any) -> None:
        from engine.events import NodeBenchmarked

        if isinstance(event, NodeBenchmarked):
            node = job.results.get(event.node.id)
            if node is not None and node.code_path is not None:
                self.verdicts[node.code_path.resolve()] = Verdict(
                    node.result,
                    job.id,
                    event.node.id,
                    _trace_links(node.trace_files),
                    job.reference,
                )
                self.publish_path(node.code_path.resolve(), only_if_open=True)
        if not job.active and job.kind is not JobKind.OPTIMIZE:
            self._record_kernel_verdict(job)
            if job.kind is JobKind.DEBUG and job.state is JobState.DONE:
                self._propose_fix(job)
        self.protocol.notify(notifications.JOB_UPDATED, notifications.job_payload(job))
        self.progress.update(job)
        if not job.active:
            self._announce(job)
            self.refresh_lenses()
        elif event is None or type(event).__name__ in ("RoundFinished", "BestImproved"):
            self.refresh_lenses()

    def _record_kernel_verdict(self, job: Job) -> None:
        if job.verdict is None or job.kernel is None:
            return
        files = _trace_links(self._write_verify_artifacts(job))
        self.verdicts[job.kernel.resolve()] = Verdict(
            job.verdict, job.id, None, files, job.reference
        )
        self.publish_path(job.kernel.resolve())

    def _propose_fix(self, job: Job) -> None:
        """The debug agent's fix comes back as an edit the user accepts (VS Code shows a
        preview because of the confirmation annotation; Neovim puts it in the buffer,
        unsaved, undoable). It also stays available as a code action and a lens."""
        from stark_lsp import edits

        if job.debug is None or not job.debug.fixed_code or job.kernel is None:
            return
        fixed = job.debug.fixed
        if fixed is not None and fixed.correct:
            note = f"now correct, {fixed.speedup:.2f}x" if fixed.speedup else "now correct"
        else:
            note = "not verified correct" if fixed is None else f"still failing: {fixed.error}"
        label = f"STARK debug agent fix for {job.kernel.name} ({note})"

        async def propose() -> None:
            outcome = await edits.replace_file_via_client(
                self, job.kernel, job.debug.fixed_code, label
            )
            log.info("debug fix %s: applied=%s %s", job.id, outcome.applied, outcome.reason or "")

        self.background.spawn(propose(), f"debug fix proposal of {job.id}")

    def _write_verify_artifacts(self, job: Job) -> list[Path]:
        """A verification from the editor has no task trace: keep its full log and a
        script that reproduces it, so the diagnostic links somewhere useful."""
        assert job.verdict is not None and job.kernel is not None
        directory = self.out_dir_for(job.reference) / ".lsp" / job.id
        try:
            directory.mkdir(parents=True, exist_ok=True)
            log_path = directory / "verify_log.txt"
            log_path.write_text(job.verdict.log or "(no output)\n", encoding="utf-8")
            script = directory / f"verify_{job.kernel.stem}.py"
            argv = ["bench", str(job.reference), str(job.kernel), "--device", job.device]
            argv += _tolerance_flags(job.argv)  # the same tolerances as the job
            script.write_text(
                f'"""Re-run the STARK verification of {job.kernel.name} ({job.id})."""\n'
                "import sys\n\nfrom engine.cli import main\n\n"
                f"sys.exit(main({argv!r}))\n",
                encoding="utf-8",
            )
        except OSError as exc:
            log.warning("could not write verification artifacts: %s", exc)
            return []
        job.artifacts = [log_path, script]
        return job.artifacts

    def _announce(self, job: Job) -> None:
        name = Path(job.kernel or job.reference).name
        if job.state is JobState.FAILED:
            self.window_show_message(
                types.ShowMessageParams(
                    type=types.MessageType.Error,
                    message=f"STARK {job.kind} {name} failed: {job.error}",
                )
            )
        elif job.state is JobState.DONE and job.kind is JobKind.OPTIMIZE:
            best = job.best.short() if job.best is not None else "no correct kernel"
            self.window_log_message(
                types.LogMessageParams(
                    type=types.MessageType.Info,
                    message=f"STARK optimize {name} done: {best} ({job.id})",
                )
            )

    def refresh_lenses(self) -> None:
        caps = self.client_capabilities
        workspace = getattr(caps, "workspace", None) if caps else None
        lens = getattr(workspace, "code_lens", None) if workspace else None
        if lens is not None and lens.refresh_support:

            async def refresh() -> None:
                try:
                    await self.workspace_code_lens_refresh_async(None)
                except Exception as exc:  # noqa: BLE001 - a refresh is a courtesy
                    log.debug("codeLens refresh failed: %s", exc)

            self.background.spawn(refresh(), "codeLens refresh")


def _tolerance_flags(argv: list[str]) -> list[str]:
    """The `--atol`/`--rtol` pairs of a job's command line."""
    flags: list[str] = []
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("--atol", "--rtol"):
            flags += [flag, value]
    return flags


def _trace_links(paths: list[Path]) -> list[RelatedFile]:
    """Label trace files by what they hold (names from engine/trace)."""
    links: list[RelatedFile] = []
    for path in paths:
        name = path.name
        if name.endswith(("log.txt", ".log")):
            label = "full verification log"
        elif name.startswith("verify_") and name.endswith(".py"):
            label = "standalone verify script"
        elif name.endswith("profile.txt"):
            label = "profile"
        elif path.parent.name.endswith("_verify"):
            label = (
                "candidate as verified" if path.stem.endswith("_new") else "reference as verified"
            )
        elif name.endswith("prompt.txt"):
            label = "prompt"
        elif name.endswith("result.txt"):
            label = "agent reply"
        else:
            label = name
        links.append(RelatedFile(path, label))
    return links


def create_server() -> StarkLanguageServer:
    from stark_lsp import actions, commands, features, hover, lenses

    server = StarkLanguageServer()
    features.register(server)
    commands.register(server)
    actions.register(server)
    lenses.register(server)
    hover.register(server)
    return server
