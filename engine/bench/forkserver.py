"""A warm fork server: imports torch once, then forks one worker per evaluation.

It runs as `python -m engine.bench.forkserver`, started by `Sandbox`. It never
touches CUDA, so every forked worker initialises CUDA itself, fresh.

Protocol (one JSON object per line):
  parent -> server   {"id": str, "dir": str}        evaluate the request in dir
  server -> parent   {"ready": true, "import_s": f}  once, after imports
                     {"id": str, "pid": int}         worker forked (pid == pgid)
                     {"id": str, "pid": int, "status": int}  worker reaped (raw wait status)
The server exits on stdin EOF, killing every worker group still alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def _preload() -> float:
    start = time.perf_counter()
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import torch.utils.cpp_extension  # noqa: F401

    from engine.bench import worker  # noqa: F401  (pulls in the worker's own imports)

    return time.perf_counter() - start


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker if the fork server goes away."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _run_child(eval_dir: str, keep_fds: tuple[int, ...]) -> None:
    """In the forked child: new process group, quiet fds, run the worker, never return."""
    code = 70
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        _die_with_parent()
        for fd in keep_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        log_fd = os.open(os.path.join(eval_dir, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null_fd)
        os.close(log_fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        from engine.bench import worker

        worker.run(eval_dir)
        code = 0
    except BaseException:  # noqa: BLE001 - report, then exit; never unwind into the server loop
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class _LineReader:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.eof = False

    def read_lines(self) -> list[bytes]:
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
            return []
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [line for line in lines if line.strip()]


def main() -> None:
    # Keep a private channel to the parent; anything printed by accident goes to stderr.
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    stdin_fd = sys.stdin.fileno()

    import_s = _preload()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    children: dict[int, str] = {}

    def send(obj: dict[str, object]) -> None:
        channel.write(json.dumps(obj) + "\n")
        channel.flush()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request_id = children.pop(pid, None)
            # Take down anything the worker left behind in its group (ninja, cc1plus, ...).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            if request_id is not None:
                send({"id": request_id, "pid": pid, "status": status})

    send({"ready": True, "import_s": import_s, "pid": os.getpid()})
    reader = _LineReader(stdin_fd)
    try:
        while not reader.eof:
            try:
                ready, _, _ = select.select([stdin_fd, wake_r], [], [], 1.0)
            except InterruptedError:
                ready = []
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
            reap()
            if stdin_fd not in ready:
                continue
            for line in reader.read_lines():
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _run_child(request["dir"], (stdin_fd, wake_r, wake_w, channel.fileno()))
                with contextlib.suppress(OSError):
                    os.setpgid(pid, pid)
                children[pid] = request["id"]
                send({"id": request["id"], "pid": pid})
    finally:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
