"""`workspace/executeCommand`. Every command takes one JSON object; anything
else (missing or unknown keys, wrong types, unknown jobIds, non-file URIs,
files that are not tasks) is a JSON-RPC InvalidParams error whose message says
what to fix, and the server keeps serving. Jobs answer `{jobId}` at once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from stark_lsp import config, edits
from stark_lsp.jobs import Job, JobError, JobKind, JobState
from stark_lsp.notifications import job_payload
from stark_lsp.server import StarkLanguageServer, UserError, path_to_uri, uri_to_path
from stark_lsp.tasks import DocumentKind, applied_kernel_path

log = logging.getLogger(__name__)

OPTIMIZE = "stark.optimize"
DEBUG = "stark.debug"
VERIFY = "stark.verify"
CANCEL = "stark.cancel"
APPLY_BEST = "stark.applyBest"
APPLY_FIX = "stark.applyFix"
JOBS = "stark.jobs"
WATCH = "stark.watch"
UNWATCH = "stark.unwatch"
SERVER_INFO = "stark.serverInfo"

# name -> (type or tuple of types, required)
Schema = dict[str, tuple[type | tuple[type, ...], bool]]


def parse_args(command: str, arguments: tuple[Any, ...], schema: Schema) -> dict[str, Any]:
    """Exactly one JSON object with known keys of the right types."""
    if len(arguments) == 0 and not any(required for _, required in schema.values()):
        return {}
    if len(arguments) != 1 or not isinstance(arguments[0], dict):
        expected = "{" + ", ".join(f"{k}{'' if r else '?'}" for k, (_, r) in schema.items()) + "}"
        raise UserError(f"{command} takes one object argument {expected}, got {list(arguments)!r}")
    args: dict[str, Any] = arguments[0]
    unknown = sorted(set(args) - set(schema))
    if unknown and not schema:
        raise UserError(f"{command} takes no arguments, got {', '.join(unknown)}")
    if unknown:
        raise UserError(
            f"{command}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(schema)}"
        )
    for key, (kind, required) in schema.items():
        if key not in args or args[key] is None:
            if required:
                raise UserError(f"{command}: missing required argument {key!r}")
            continue
        value = args[key]
        bad_bool = (
            isinstance(value, bool)
            and kind is not bool
            and bool not in (kind if isinstance(kind, tuple) else (kind,))
        )
        if bad_bool or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise UserError(f"{command}: {key!r} must be {names}, not {value!r}")
    return args


def _task_file(server: StarkLanguageServer, uri: Any) -> tuple[str, Path]:
    path = uri_to_path(uri)
    if not path.is_file():
        raise UserError(f"{path} does not exist (save the file first)")
    if path.suffix != ".py":
        raise UserError(f"{path.name} is not a Python file")
    return uri, path


async def _reference_of(
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


def _calls_model(server: StarkLanguageServer, agent: str | None) -> bool:
    """Whether a job's agent may call a model, i.e. whether it needs the API key
    (`auto` becomes `openai` when a key or base URL is configured)."""
    return (agent or server.settings.agent) != "offline"


def _agent_args(server: StarkLanguageServer, agent: str | None, model: str | None) -> list[str]:
    settings = server.settings
    out = ["--agent", agent or settings.agent]
    if model or settings.model:
        out += ["--model", model or settings.model or ""]
    if settings.base_url:
        out += ["--base-url", settings.base_url]
    return out


async def optimize(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(
        OPTIMIZE,
        arguments,
        {
            "uri": (str, True),
            "rounds": (int, False),
            "agent": (str, False),
            "model": (str, False),
            "device": (str, False),
            "seed": (int, False),
        },
    )
    uri, path = _task_file(server, args["uri"])
    reference, _ = await _reference_of(server, uri, path)
    job = await start_optimize(server, uri, reference, args)
    return {"jobId": job.id, "state": str(job.state)}


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
    agent = args.get("agent")
    if agent is not None and agent not in config.AGENTS:
        raise UserError(
            f"{OPTIMIZE}: agent must be one of {', '.join(config.AGENTS)}, not {agent!r}"
        )
    device = args.get("device", settings.device)
    if device not in config.DEVICES:
        raise UserError(
            f"{OPTIMIZE}: device must be one of {', '.join(config.DEVICES)}, not {device!r}"
        )
    seed = args.get("seed", settings.seed)
    ref_uri = server.open_uri_for(reference) or path_to_uri(reference)
    source = server.materialize(reference, ref_uri)
    argv = server.engine_argv(
        "optimize",
        str(source),
        "--rounds",
        str(rounds),
        *_agent_args(server, agent, args.get("model")),
        "--device",
        device,
        "--seed",
        str(seed),
        "--out",
        str(server.out_dir_for(reference)),
        "--events",
        "jsonl",
    )
    if settings.epsilon is not None:
        argv += ["--epsilon", str(settings.epsilon)]
    argv += config.tolerance_args(settings)
    argv += list(settings.optimize_args)
    job = Job(
        id=server.jobs.new_id(),
        kind=JobKind.OPTIMIZE,
        uri=uri,
        key=f"optimize:{reference}",
        reference=reference,
        kernel=None,
        argv=argv,
        env=server.engine_env(calls_model=_calls_model(server, agent)),
        cwd=str(reference.parent),
        rounds=rounds,
        origin=origin,
        device=device,
    )
    return await _submit(server, job, replace=origin == "watch")


async def _submit(server: StarkLanguageServer, job: Job, replace: bool) -> Job:
    try:
        return await server.jobs.submit(job, replace=replace)
    except JobError as exc:
        raise UserError(str(exc)) from exc


async def start_verify(
    server: StarkLanguageServer, uri: str, reference: Path, kernel: Path, origin: str = "command"
) -> Job:
    server.require_trust()
    device = server.settings.device
    ref_source = server.materialize(
        reference, server.open_uri_for(reference) or path_to_uri(reference)
    )
    kernel_source = server.materialize(kernel, server.open_uri_for(kernel) or path_to_uri(kernel))
    argv = server.engine_argv(
        "bench",
        str(ref_source),
        str(kernel_source),
        "--device",
        device,
        *config.tolerance_args(server.settings),
        "--json",
    )
    job = Job(
        id=server.jobs.new_id(),
        kind=JobKind.VERIFY,
        uri=uri,
        key=f"verify:{kernel}",
        reference=reference,
        kernel=kernel,
        argv=argv,
        env=server.engine_env(calls_model=False),  # bench runs untrusted code, calls no model
        cwd=str(kernel.parent),
        origin=origin,
        device=device,
    )
    return await _submit(server, job, replace=origin == "watch")


async def verify(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(VERIFY, arguments, {"uri": (str, True)})
    uri, path = _task_file(server, args["uri"])
    reference, kernel = await _reference_of(server, uri, path)
    job = await start_verify(server, uri, reference, *_verification_target(reference, kernel))
    return {"jobId": job.id, "state": str(job.state)}


def _verification_target(reference: Path, kernel: Path | None) -> tuple[Path]:
    """A kernel is verified against its reference. A reference is verified through its
    applied kernel (`<name>_stark.py`) when there is one, else against itself (it runs on
    its own inputs and agrees with itself)."""
    if kernel is not None:
        return (kernel,)
    applied = applied_kernel_path(reference)
    return (applied if applied.is_file() else reference,)


async def debug(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(
        DEBUG, arguments, {"uri": (str, True), "agent": (str, False), "model": (str, False)}
    )
    uri, path = _task_file(server, args["uri"])
    reference, kernel = await _reference_of(server, uri, path)
    if kernel is None:
        raise UserError(
            f"{DEBUG} needs a kernel (a file with `class ModelNew`); {path.name} is a reference"
        )
    server.require_trust()
    agent = args.get("agent")
    if agent is not None and agent not in config.AGENTS:
        raise UserError(f"{DEBUG}: agent must be one of {', '.join(config.AGENTS)}, not {agent!r}")
    ref_source = server.materialize(
        reference, server.open_uri_for(reference) or path_to_uri(reference)
    )
    kernel_source = server.materialize(kernel, uri)
    argv = server.engine_argv(
        "debug",
        str(kernel_source),
        "--reference",
        str(ref_source),
        *_agent_args(server, agent, args.get("model")),
        "--device",
        server.settings.device,
        "--json",
    )
    job = Job(
        id=server.jobs.new_id(),
        kind=JobKind.DEBUG,
        uri=uri,
        key=f"debug:{kernel}",
        reference=reference,
        kernel=kernel,
        argv=argv,
        env=server.engine_env(calls_model=_calls_model(server, agent)),
        cwd=str(kernel.parent),
        device=server.settings.device,
    )
    job = await _submit(server, job, replace=False)
    return {"jobId": job.id, "state": str(job.state)}


async def cancel(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(CANCEL, arguments, {"jobId": (str, True)})
    try:
        job = await server.jobs.cancel(args["jobId"])
    except JobError as exc:
        raise UserError(str(exc)) from exc
    return {"jobId": job.id, "state": str(job.state)}


def _job(server: StarkLanguageServer, job_id: Any) -> Job:
    try:
        return server.jobs.get(job_id)
    except JobError as exc:
        raise UserError(str(exc)) from exc


async def apply_best(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(APPLY_BEST, arguments, {"jobId": (str, True)})
    job = _job(server, args["jobId"])
    if job.kind is not JobKind.OPTIMIZE:
        raise UserError(f"{job.id} is a {job.kind} job; applyBest needs an optimize job")
    if job.best_kernel is None:
        why = "is still running" if job.active else f"is {job.state} without a correct kernel"
        raise UserError(f"{job.id} {why}; there is no best kernel to apply yet")
    try:
        code = job.best_kernel.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"cannot read the best kernel {job.best_kernel}: {exc.strerror or exc}"
        ) from exc
    target = applied_kernel_path(job.reference)
    code = edits.with_reference_comment(code, target, job.reference)
    best = job.best
    label = best.apply_label() if best is not None else "best kernel (speedup unknown)"
    applied = await edits.write_file_via_client(
        server, target, code, f"STARK: apply {label} from {job.id}"
    )
    if applied.applied:
        best = job.results.get(job.best_node) if job.best_node is not None else None
        if best is not None:
            from stark_lsp.server import Verdict, _trace_links

            server.verdicts[target] = Verdict(
                best.result, job.id, job.best_node, _trace_links(best.trace_files), job.reference
            )
    return {"applied": applied.applied, "uri": path_to_uri(target), "failureReason": applied.reason}


async def apply_fix(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(APPLY_FIX, arguments, {"jobId": (str, True)})
    job = _job(server, args["jobId"])
    if job.kind is not JobKind.DEBUG or job.kernel is None:
        raise UserError(f"{job.id} is not a debug job")
    if job.debug is None or not job.debug.fixed_code:
        raise UserError(
            f"{job.id} has no proposed fix ({job.state}{': ' + job.error if job.error else ''})"
        )
    applied = await edits.replace_file_via_client(
        server, job.kernel, job.debug.fixed_code, f"STARK debug agent fix from {job.id}"
    )
    return {
        "applied": applied.applied,
        "uri": path_to_uri(job.kernel),
        "failureReason": applied.reason,
    }


async def jobs(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    parse_args(JOBS, arguments, {})
    return {"jobs": [job_payload(job) for job in server.jobs.jobs()]}


async def watch(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(WATCH, arguments, {"uri": (str, True)})
    uri, path = _task_file(server, args["uri"])
    await _reference_of(server, uri, path)  # only tasks are watched
    server.watcher.watch(path)
    await server.watcher.ready()  # answer with the glob-matched files too
    return {"watching": [path_to_uri(p) for p in server.watcher.watched()]}


async def unwatch(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(UNWATCH, arguments, {"uri": (str, True)})
    path = uri_to_path(args["uri"])
    if not server.watcher.unwatch(path):
        raise UserError(
            f"{path.name} is not watched (watched: {len(server.watcher.watched())} files)"
        )
    return {"watching": [path_to_uri(p) for p in server.watcher.watched()]}


async def server_info(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    import os
    import sys

    await server.watcher.ready()
    return {
        "pid": os.getpid(),
        "torchLoaded": "torch" in sys.modules,
        "settings": {k: v for k, v in server.settings.redacted().items() if k != "engine_command"},
        "watching": [path_to_uri(p) for p in server.watcher.watched()],
        "analysis": {
            "inFlight": server.documents.in_flight(),
            "staleDropped": server.documents.stale_dropped,
            "workerRuns": server.documents.worker.runs,
        },
    }


async def rerun_for_disk_change(server: StarkLanguageServer, path: Path) -> Job | None:
    """A watched file changed outside the editor: re-verify, or re-optimize with autoRun."""
    uri = server.open_uri_for(path) or path_to_uri(path)
    server.forget(uri)
    server.publish(uri)
    reference, kernel = await _reference_of(server, uri, path)
    if server.settings.auto_run and kernel is None:
        return await start_optimize(server, uri, reference, {}, origin="watch")
    return await start_verify(
        server, uri, reference, *_verification_target(reference, kernel), origin="watch"
    )


Handler = Callable[..., Awaitable[Any]]
COMMANDS: dict[str, Handler] = {
    OPTIMIZE: optimize,
    DEBUG: debug,
    VERIFY: verify,
    CANCEL: cancel,
    APPLY_BEST: apply_best,
    APPLY_FIX: apply_fix,
    JOBS: jobs,
    WATCH: watch,
    UNWATCH: unwatch,
    SERVER_INFO: server_info,
}


def register(server: StarkLanguageServer) -> None:
    for name, handler in COMMANDS.items():
        server.command(name)(_guarded(name, handler))


def _guarded(name: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
    """Turn user errors into InvalidParams responses with a readable message."""

    async def run(ls: StarkLanguageServer, *arguments: Any) -> Any:
        try:
            return await handler(ls, *arguments)
        except UserError as exc:
            raise JsonRpcInvalidParams(
                message=f"{name}: {exc}" if not str(exc).startswith(name) else str(exc)
            ) from exc

    run.__name__ = name.replace(".", "_")
    return run


__all__ = ["COMMANDS", "JobState", "register", "types"]
