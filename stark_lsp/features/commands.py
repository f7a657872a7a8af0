"""`workspace/executeCommand`. Every command takes one JSON object; anything
else (missing or unknown keys, wrong types, unknown jobIds, non-file URIs,
files that are not tasks) is a JSON-RPC InvalidParams error whose message says
what to fix, and the server keeps serving. Jobs answer `{jobId}` at once."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pygls.exceptions import JsonRpcInvalidParams

from stark_lsp import edits, launch
from stark_lsp.core import (
    APPLY_BEST,
    APPLY_FIX,
    CANCEL,
    DEBUG,
    JOBS,
    OPTIMIZE,
    SERVER_INFO,
    UNWATCH,
    VERIFY,
    WATCH,
    UserError,
    Verdict,
    path_to_uri,
    trace_links,
    uri_to_path,
)
from stark_lsp.job import Job, JobError, JobKind
from stark_lsp.notifications import job_payload
from stark_lsp.server import StarkLanguageServer
from stark_lsp.tasks import applied_kernel_path

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
    uri, path = launch.task_file(args["uri"])
    reference, _ = await launch.reference_of(server, uri, path)
    job = await launch.start_optimize(server, uri, reference, args)
    return {"jobId": job.id, "state": str(job.state)}


async def verify(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(VERIFY, arguments, {"uri": (str, True)})
    uri, path = launch.task_file(args["uri"])
    reference, kernel = await launch.reference_of(server, uri, path)
    target = launch.verification_target(reference, kernel)
    job = await launch.start_verify(server, uri, reference, target)
    return {"jobId": job.id, "state": str(job.state)}


async def debug(server: StarkLanguageServer, *arguments: Any) -> dict[str, Any]:
    args = parse_args(
        DEBUG, arguments, {"uri": (str, True), "agent": (str, False), "model": (str, False)}
    )
    uri, path = launch.task_file(args["uri"])
    reference, kernel = await launch.reference_of(server, uri, path)
    if kernel is None:
        raise UserError(
            f"{DEBUG} needs a kernel (a file with `class ModelNew`); {path.name} is a reference"
        )
    job = await launch.start_debug(
        server, uri, reference, kernel, args.get("agent"), args.get("model")
    )
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
            server.verdicts[target] = Verdict(
                best.result, job.id, job.best_node, trace_links(best.trace_files), job.reference
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
    uri, path = launch.task_file(args["uri"])
    await launch.reference_of(server, uri, path)  # only tasks are watched
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
