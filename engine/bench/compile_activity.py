"""Is the worker compiling? A heartbeat the sandbox uses to stretch the warm-up deadline
while dynamo, Inductor, Triton or cpp_extension work, and never for a candidate's own loop."""

from __future__ import annotations

import contextlib
import sys
import sysconfig
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.atomic_io import SCRATCH_FILE, atomic_write_text
from engine.bench.signed_files import ACTIVITY_FILE

ACTIVITY_POLL_S = 0.2
# Code whose frames on the main thread's stack mean "compiling": dynamo tracing, AOT
# autograd, Inductor codegen and its C++ builds, Triton, cpp_extension and our cache wrapper.
COMPILE_CODE_MARKERS = (
    "/torch/_dynamo/",
    "/torch/_inductor/",
    "/torch/_functorch/",
    "/torch/_subclasses/",
    "/torch/fx/",
    "/torch/utils/cpp_extension.py",
    "/triton/compiler/",
    "/triton/backends/",
    "/engine/bench/compile_cache.py",
    "/engine/bench/toolchain.py",
)


_STDLIB = sysconfig.get_paths()["stdlib"]


def compiling_frame(frame: Any) -> bool:
    """Is the innermost frame that is not the standard library's (subprocess waits,
    threading) inside compiler code? A candidate's own loop is never: its frames are its."""
    depth = 0
    while frame is not None and depth < 200:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_STDLIB) or filename.startswith("<frozen")):
            return any(marker in filename for marker in COMPILE_CODE_MARKERS)
        frame = frame.f_back
        depth += 1
    return False


class CompileActivity:
    """While the reference's first calls or the candidate's first call run, a harness thread
    looks at the main thread's stack every 0.2 s and, when it is inside compiler code, bumps a
    signed counter in the file `activity`: the sandbox then restarts the warm-up's run
    deadline (within the compile deadline). An endless loop in forward is not compiling, so
    it meets the run deadline, not the compile one."""

    def __init__(self, eval_dir: Path, heartbeat_mac: Callable[[int], str]) -> None:
        # Signs a heartbeat count and nothing else: this object is alive while the candidate's
        # first call runs, so it must not hold a signer that would sign a verdict.
        self.path = eval_dir / ACTIVITY_FILE
        self.heartbeat_mac = heartbeat_mac
        self.count = 0
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CompileActivity:
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="stark-compile-watch")
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(ACTIVITY_POLL_S):
            frame = sys._current_frames().get(self._main)  # noqa: SLF001
            if frame is not None and compiling_frame(frame):
                self.count += 1
                with contextlib.suppress(OSError):
                    atomic_write_text(
                        self.path,
                        f"{self.count} {self.heartbeat_mac(self.count)}",
                        **SCRATCH_FILE,
                    )
            del frame
