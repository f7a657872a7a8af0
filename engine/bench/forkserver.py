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
import gc
import json
import os
import select
import signal
import sys
import time

import psutil

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
SWEEP_ROUNDS = 50


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


def _become_subreaper() -> None:
    """Orphans of a worker (ninja runs each compiler in its OWN process group, and a candidate
    may daemonize) are re-parented to this server instead of init, so they can be swept."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _child_pids(parent: int) -> list[int]:
    """Direct children of `parent`, zombies included (they still need reaping). psutil is
    safe here: no candidate code ever runs in the fork server itself."""
    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.Error:
        return []


def _sweep_orphans(workers: dict[int, str]) -> None:
    """SIGKILL every child of this server that is not a live worker, with its group; repeat,
    because each kill re-parents that process's own children to us."""
    me = os.getpid()
    for _ in range(SWEEP_ROUNDS):
        strays = [pid for pid in _child_pids(me) if pid not in workers]
        if not strays:
            return
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        # Reap exactly these (never a worker: its status must reach the parent); each may
        # have handed its own children to us meanwhile, which the next round finds.
        deadline = time.monotonic() + 0.5
        pending = set(strays)
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        pending.discard(pid)
                except ChildProcessError:
                    pending.discard(pid)
            if pending:
                time.sleep(0.002)


def _run_child(eval_dir: str, keep_fds: tuple[int, ...]) -> None:
    """In the forked child: new process group, quiet fds, run the worker, never return."""
    code = 70
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        _die_with_parent()
        # Open the new fds before closing the server's: closing stdin (fd 0) first would
        # make the log land on fd 0, be overwritten by /dev/null, and lose all output.
        log_fd = os.open(
            os.path.join(eval_dir, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for fd in {null_fd, log_fd, *keep_fds} - {0, 1, 2}:
            with contextlib.suppress(OSError):
                os.close(fd)
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

    _become_subreaper()
    import_s = _preload()
    # Move everything imported so far out of the collector's reach: a worker's gc.collect()
    # then neither walks torch's ~10^5 objects nor dirties (copies) their pages after fork.
    gc.collect()
    gc.freeze()

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
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request_id = children.pop(pid, None)
            if request_id is None:
                continue  # an orphan re-parented to us (see _become_subreaper)
            # Take down anything the worker left behind: its group (ninja, a helper the
            # candidate started) and, via the subreaper, compilers in their own groups.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            _sweep_orphans(children)
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
