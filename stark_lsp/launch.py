"""Starting engine jobs: which task a document is (reference, kernel), the engine's
command line and environment for each kind of job, and where its output goes. The
command handlers (stark_lsp.features.commands) and the watcher's re-runs
(stark_lsp.features.watch) both start jobs through here, so a job is built one way."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stark_lsp import config
from stark_lsp.core import DEBUG, OPTIMIZE, UserError, path_to_uri, uri_to_path
from stark_lsp.job import Job, JobError, JobKind
from stark_lsp.tasks import DocumentKind, applied_kernel_path

if TYPE_CHECKING:
    from stark_lsp.server import StarkLanguageServer

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# -- the engine process ------------------------------------------------------------------
def engine_argv(settings: config.Settings, *args: str) -> list[str]:
    base = list(settings.engine_command or (sys.executable, "-m", "engine"))
    return [*base, *args]


def engine_env(settings: config.Settings, calls_model: bool) -> dict[str, str]:
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
    key = settings.api_key
    if key and calls_model:  # handed over by the client: only ever in the child's env
        env["STARK_API_KEY"] = key
        env["OPENAI_API_KEY"] = key
    return env


def out_dir_for(server: StarkLanguageServer, reference: Path) -> Path:
    if server.settings.out_dir:
        out = Path(server.settings.out_dir).expanduser()
        if not out.is_absolute():
            roots = server.workspace_roots()
            out = (roots[0] if roots else reference.parent) / out
        return out
    for root in server.workspace_roots():
        if reference.is_relative_to(root):
            return root / "stark_runs"
    return reference.parent / "stark_runs"


def materialize(server: StarkLanguageServer, path: Path, uri: str | None = None) -> Path:
    """The file the engine should read: the editor's unsaved text if it differs from disk."""
    uri = uri or server.open_uri_for(path) or path_to_uri(path)
    if uri not in server.workspace.text_documents:
        return path
    text = server.workspace.get_text_document(uri).source
    try:
        on_disk = path.read_text(encoding="utf-8")
    except OSError:
        on_disk = None
    if on_disk == text:
        return path
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    snapshot_dir = out_dir_for(server, path) / ".lsp" / "snapshots" / digest
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    snapshot = snapshot_dir / path.name
    snapshot.write_text(text, encoding="utf-8")
    return snapshot


# -- which task a document is ------------------------------------------------------------
def task_file(uri: Any) -> tuple[str, Path]:
    path = uri_to_path(uri)
    if not path.is_file():
        raise UserError(f"{path} does not exist (save the file first)")
    if path.suffix != ".py":
        raise UserError(f"{path.name} is not a Python file")
    return uri, path


async def reference_of(
    server: StarkLanguageServer, uri: str, path: Path
) -> tuple[Path, Path | None]:
    """(reference, kernel) for a document that must be a task."""
    analysis = await server.analysis(uri)
    info = analysis.info
    if info.syntax_error is not None and info.kind is not DocumentKind.OTHER:
        raise UserError(
            f"{path.name} has a syntax error on line {info.syntax_error.lineno}: {info.syntax_error.msg}"
        )
    if info.kind is DocumentKind.REFERENCE:
        return path, None
    if info.kind is DocumentKind.KERNEL:
        lookup = analysis.lookup
        if lookup is None or lookup.path is None:
            raise UserError(f"{path.name}: {lookup.problem if lookup else 'no reference found'}")
        return lookup.path, path
    raise UserError(
        f"{path.name} is not a STARK task: a reference defines a top-level `class Model`, "
        "a kernel defines `class ModelNew`"
    )


def verification_target(reference: Path, kernel: Path | None) -> Path:
    """A kernel is verified against its reference. A reference is verified through its
    applied kernel (`<name>_stark.py`) when there is one, else against itself (it runs on
    its own inputs and agrees with itself)."""
    if kernel is not None:
        return kernel
    applied = applied_kernel_path(reference)
    return applied if applied.is_file() else reference


# -- jobs ------------------------------------------------------------------------------
def _checked_agent(command: str, agent: str | None) -> str | None:
    if agent is not None and agent not in config.AGENTS:
        raise UserError(
            f"{command}: agent must be one of {', '.join(config.AGENTS)}, not {agent!r}"
        )
    return agent


def _agent_args(settings: config.Settings, agent: str | None, model: str | None) -> list[str]:
    out = ["--agent", agent or settings.agent]
    if model or settings.model:
        out += ["--model", model or settings.model or ""]
    if settings.base_url:
        out += ["--base-url", settings.base_url]
    return out


def _calls_model(settings: config.Settings, agent: str | None) -> bool:
    """Whether a job's agent may call a model, i.e. whether it needs the API key
    (`auto` becomes `openai` when a key or base URL is configured)."""
    return (agent or settings.agent) != "offline"


async def _submit(
    server: StarkLanguageServer,
    kind: JobKind,
    uri: str,
    target: Path,
    reference: Path,
    kernel: Path | None,
    argv: list[str],
    calls_model: bool,
    origin: str,
    device: str,
    rounds: int = 0,
) -> Job:
    """Build the job (one key per target: at most one active job each) and queue it; a
    re-run from the watcher replaces the active one, a command is refused instead."""
    job = Job(
        id=server.jobs.new_id(),
        kind=kind,
        uri=uri,
        key=f"{kind}:{target}",
        reference=reference,
        kernel=kernel,
        argv=argv,
        env=engine_env(server.settings, calls_model=calls_model),
        cwd=str(target.parent),
        rounds=rounds,
        origin=origin,
        device=device,
    )
    try:
        return await server.jobs.submit(job, replace=origin == "watch")
    except JobError as exc:
        raise UserError(str(exc)) from exc


async def start_optimize(
    server: StarkLanguageServer,
    uri: str,
    reference: Path,
    args: dict[str, Any],
    origin: str = "command",
) -> Job:
    server.require_trust()
    settings = server.settings
    rounds = args.get("rounds", settings.rounds)
    if not 1 <= rounds <= 1000:
        raise UserError(f"{OPTIMIZE}: rounds must be between 1 and 1000, not {rounds}")
    agent = _checked_agent(OPTIMIZE, args.get("agent"))
    device = args.get("device", settings.device)
    if device not in config.DEVICES:
        raise UserError(
            f"{OPTIMIZE}: device must be one of {', '.join(config.DEVICES)}, not {device!r}"
        )
    seed = args.get("seed", settings.seed)
    argv = engine_argv(
        settings,
        "optimize",
        str(materialize(server, reference)),
        "--rounds",
        str(rounds),
        *_agent_args(settings, agent, args.get("model")),
        "--device",
        device,
        "--seed",
        str(seed),
        "--out",
        str(out_dir_for(server, reference)),
        "--events",
        "jsonl",
    )
    if settings.epsilon is not None:
        argv += ["--epsilon", str(settings.epsilon)]
    if settings.parallel != 1:
        argv += ["--parallel", str(settings.parallel)]
    argv += config.tolerance_args(settings)
    argv += list(settings.optimize_args)
    return await _submit(
        server,
        JobKind.OPTIMIZE,
        uri,
        reference,
        reference,
        None,
        argv,
        calls_model=_calls_model(settings, agent),
        origin=origin,
        device=device,
        rounds=rounds,
    )


async def start_verify(
    server: StarkLanguageServer, uri: str, reference: Path, kernel: Path, origin: str = "command"
) -> Job:
    server.require_trust()
    device = server.settings.device
    argv = engine_argv(
        server.settings,
        "bench",
        str(materialize(server, reference)),
        str(materialize(server, kernel)),
        "--device",
        device,
        *config.tolerance_args(server.settings),
        "--json",
    )
    return await _submit(
        server,
        JobKind.VERIFY,
        uri,
        kernel,
        reference,
        kernel,
        argv,
        calls_model=False,  # bench runs untrusted code, calls no model
        origin=origin,
        device=device,
    )


async def start_debug(
    server: StarkLanguageServer,
    uri: str,
    reference: Path,
    kernel: Path,
    agent: str | None,
    model: str | None,
) -> Job:
    server.require_trust()
    agent = _checked_agent(DEBUG, agent)
    device = server.settings.device
    argv = engine_argv(
        server.settings,
        "debug",
        str(materialize(server, kernel, uri)),
        "--reference",
        str(materialize(server, reference)),
        *_agent_args(server.settings, agent, model),
        "--device",
        device,
        "--json",
    )
    return await _submit(
        server,
        JobKind.DEBUG,
        uri,
        kernel,
        reference,
        kernel,
        argv,
        calls_model=_calls_model(server.settings, agent),
        origin="command",
        device=device,
    )


def write_verify_artifacts(server: StarkLanguageServer, job: Job) -> list[Path]:
    """A verification from the editor has no task trace: keep its full log and a
    script that reproduces it, so the diagnostic links somewhere useful."""
    assert job.verdict is not None and job.kernel is not None
    directory = out_dir_for(server, job.reference) / ".lsp" / job.id
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


def _tolerance_flags(argv: list[str]) -> list[str]:
    """The `--atol`/`--rtol` pairs of a job's command line."""
    flags: list[str] = []
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("--atol", "--rtol"):
            flags += [flag, value]
    return flags
