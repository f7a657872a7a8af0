"""`stark batch --ray ADDRESS`: one Ray task per STARK task, on a running cluster (`auto`,
`HOST:PORT`, `ray://HOST:10001`) or on one started here for the batch (`local`).

Ray schedules the tasks (`num_gpus=1` each where the batch runs on GPUs, so Ray sets each
task's CUDA_VISIBLE_DEVICES; `num_cpus=1` otherwise) and the driver only waits on them
(`ray.wait`). A task whose worker process dies or whose node is lost is run again by Ray
once (`max_retries=1`; the retry resumes from the task's tree.json); if that fails too, or
the task raised, the failure is that task's error and the batch goes on.

Task directories are written where the driver put the run directory, so that path must be
on a file system every node shares (NFS, a cluster file system): each task first checks that
it sees the driver's probe file there and fails with a clear error otherwise. Each task has
its own Benchmarker; per-task events come back over a Ray queue (`relay`).
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.artifacts.events import EventSink, TaskFailed
from engine.batch.metrics import TaskOutcome
from engine.batch.relay import EventPump, QueueSink
from engine.batch.task import TaskJob

RAY_MISSING = (
    "stark batch --ray needs Ray: pip install 'stark-kernels[ray]' "
    "(in a checkout of STARK: pip install -e '.[ray]')"
)
PROBE_FILE = ".ray-probe"
MAX_RETRIES = 1  # Ray runs a task again once when its worker or node dies
Record = Callable[[TaskJob, TaskOutcome], None]


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says which."""


class RunDirNotShared(RuntimeError):
    """A node does not see the driver's run directory."""


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(RAY_MISSING) from None
    return ray


def check_shared_run_dir(run_dir: str, token: str) -> None:
    """Fail the task at once on a node where the run directory is not the driver's."""
    probe = Path(run_dir) / PROBE_FILE
    try:
        seen = probe.read_text().strip()
    except OSError:
        seen = None
    if seen != token:
        raise RunDirNotShared(
            f"node {socket.gethostname()} does not see the run directory {run_dir} the driver "
            "wrote (put --out on a file system all nodes share)"
        )


def _ray_task(job: TaskJob, events: Any, cache_key: bytes, token: str) -> TaskOutcome:
    """What runs on a Ray worker: one STARK task with a Benchmarker of its own."""
    check_shared_run_dir(job.run_dir, token)
    from engine.batch.task import run_task
    from engine.bench import Benchmarker
    from engine.bench.cache_manifest import share_with_peers

    share_with_peers(cache_key)
    with Benchmarker() as benchmarker:
        return run_task(job, benchmarker, QueueSink(events))


class RayRunner:
    """Runs jobs as Ray tasks; `record` hears of each outcome in the driver thread."""

    def __init__(self, address: str, sink: EventSink, cache_key: bytes, device: str) -> None:
        self.address = address
        self.sink = sink
        self.cache_key = cache_key
        self.device = device
        self.ray = import_ray()

    def _connect(self) -> None:
        options: dict[str, Any] = {"log_to_driver": False}
        if self.address == "local":
            options["include_dashboard"] = False
        else:
            options["address"] = self.address
        try:
            self.ray.init(**options)
        except (ConnectionError, RuntimeError, ValueError, self.ray.exceptions.RayError) as exc:
            raise RayUnavailable(
                f"cannot connect to Ray at {self.address}: {exc} (a cluster with token "
                "authentication also needs RAY_AUTH_MODE=token and its token in RAY_AUTH_TOKEN "
                "or ~/.ray/auth_token)"
            ) from None

    def _resources(self) -> dict[str, float]:
        gpus = self.ray.cluster_resources().get("GPU", 0)
        if self.device == "cuda" and not gpus:
            raise RayUnavailable("--device cuda, but the Ray cluster has no GPU")
        use_gpu = self.device == "cuda" or (self.device == "auto" and gpus > 0)
        return {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}

    def run(self, jobs: list[TaskJob], record: Record) -> None:
        if not jobs:
            return
        run_dir = Path(jobs[0].run_dir)
        token = secrets.token_hex(16)
        (run_dir / PROBE_FILE).write_text(token)
        self._connect()
        from ray.util.queue import Empty, Queue

        try:
            events = Queue(actor_options={"num_cpus": 0})
            pump = EventPump(lambda t: events.get(block=True, timeout=t), self.sink, Empty)
            remote = self.ray.remote(_ray_task).options(
                max_retries=MAX_RETRIES, retry_exceptions=False, **self._resources()
            )
            refs = {remote.remote(job, events, self.cache_key, token): job for job in jobs}
            try:
                while refs:
                    done, _ = self.ray.wait(list(refs), num_returns=1, timeout=1.0)
                    for ref in done:
                        job = refs.pop(ref)
                        record(job, self._outcome(ref, job))
            finally:
                for ref in refs:  # interrupted: nothing keeps running for a dead batch
                    self.ray.cancel(ref, force=True)
                pump.stop()
        finally:
            self.ray.shutdown()

    def _outcome(self, ref: Any, job: TaskJob) -> TaskOutcome:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:  # the task raised (e.g. RunDirNotShared)
            cause = exc.cause if exc.cause is not None else exc
            message = f"{type(cause).__name__}: {cause}"
        except exceptions.RayError as exc:  # worker died or node lost, after Ray's retry
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = f"{type(exc).__name__} after {MAX_RETRIES + 1} attempts: {first}"
        self.sink(TaskFailed(task_id=job.task.task_id, error=message))
        return job.error(message, job.root)
