"""Watch references on disk with watchdog, so a change made outside the editor
(git checkout, another tool) re-runs verification, or the optimization when
`stark.autoRun` is on. Watchdog's thread only hands paths to the event loop
(`call_soon_threadsafe`); debouncing, the editor-save filter and job
replacement happen on the loop.

Globs (`stark.watch.globs`, e.g. `**/ref_*.py`) are gitignore-style patterns
(pathspec), each anchored at a workspace folder; they are expanded against the
workspace folders when settings arrive, and each matching file's directory is
watched non-recursively (a recursive watch of a workspace with a virtualenv
would cost thousands of inotify watches). Directories created later are picked
up at the next settings change.

Expansion walks the workspace, which takes a noticeable time on a large tree,
so it runs in a worker thread (`asyncio.to_thread`), never on the event loop,
and it prunes SKIP_DIRS (virtualenvs, node_modules, VCS and build folders)
before descending into them rather than filtering their files afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pathspec
    from watchdog.observers.api import BaseObserver

    from stark_lsp.server import StarkLanguageServer

log = logging.getLogger(__name__)

# Never descended into when expanding globs: environments, caches, VCS and build output.
SKIP_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".eggs",
        "site-packages",
        "stark_runs",
        ".stark",
        "build",
        "dist",
    }
)
MAX_GLOB_FILES = 2000
MAX_GLOB_DIRS = 50_000  # bounds the walk of a pathological tree


def _anchored(pattern: str) -> str:
    """Globs are relative to a workspace folder: anchor each one there (a gitignore
    pattern without a slash would match at any depth; `**/` still does)."""
    return "/" + pattern.lstrip("/")


@lru_cache(maxsize=64)
def glob_spec(globs: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    """The globs as one gitignore-style spec (pathspec): `**` crosses directories, `*`
    and `?` do not. pathspec is imported here, when globs are set, not at start-up."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines([_anchored(g) for g in globs])


def matches(path: Path, roots: list[Path], globs: tuple[str, ...]) -> bool:
    spec = glob_spec(globs)
    for root in roots:
        if path.is_relative_to(root) and spec.match_file(path.relative_to(root).as_posix()):
            return True
    return False


def _skipped(name: str) -> bool:
    return name in SKIP_DIRS or name.endswith(".egg-info")


def expand(roots: list[Path], globs: tuple[str, ...]) -> set[Path]:
    """The files under `roots` that match `globs`. Blocking (it walks the disk): call
    it through `asyncio.to_thread`. Pruned directories are never entered and symlinked
    directories are not followed."""
    spec = glob_spec(globs)
    found: set[Path] = set()
    visited = 0
    for root in roots:
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not _skipped(d))  # prune before descending
            visited += 1
            if visited > MAX_GLOB_DIRS:
                log.warning("watch globs: stopped after %d directories", MAX_GLOB_DIRS)
                return found
            relative_dir = Path(directory).relative_to(root).as_posix()
            prefix = "" if relative_dir == "." else relative_dir + "/"
            for name in files:
                if spec.match_file(prefix + name):
                    path = Path(directory, name)
                    if path.is_file():
                        found.add(path.resolve())
                        if len(found) >= MAX_GLOB_FILES:
                            log.warning("watch globs: stopped at %d files", MAX_GLOB_FILES)
                            return found
    return found


def _baselines(paths: set[Path]) -> dict[Path, str]:
    """Content hashes of `paths` (blocking: runs in the expansion thread too)."""
    hashes: dict[Path, str] = {}
    for path in paths:
        with contextlib.suppress(OSError):
            hashes[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def _handler(manager: WatchManager) -> object:
    """A watchdog handler that only forwards file paths (watchdog is imported lazily:
    most sessions never watch anything, and start-up time matters)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory or event.event_type not in (
                "created",
                "modified",
                "moved",
                "closed",
            ):
                return
            raw = getattr(event, "dest_path", "") or event.src_path
            manager.from_thread(Path(raw if isinstance(raw, str) else raw.decode()))

    return Handler()


RerunHandler = Callable[[Path], Awaitable[object]]


class WatchManager:
    def __init__(self, server: StarkLanguageServer) -> None:
        self._server = server
        self.on_change: RerunHandler | None = None  # set by stark_lsp.features.watch
        self.explicit: set[Path] = set()
        self._glob_files: set[Path] = set()
        self._globs: tuple[str, ...] = ()
        self._roots: list[Path] = []
        self._observer: BaseObserver | None = None
        self._scheduled: dict[Path, object] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[Path, asyncio.TimerHandle] = {}
        self._last_hash: dict[Path, str] = {}
        self._expansion: asyncio.Task[None] | None = None
        self._generation = 0  # the settings change an expansion belongs to

    # -- what is watched ----------------------------------------------------------
    def watched(self) -> list[Path]:
        return sorted(self.explicit | self._glob_files)

    def is_watched(self, path: Path) -> bool:
        return (
            path in self.explicit
            or path in self._glob_files
            or (bool(self._globs) and matches(path, self._roots, self._globs))
        )

    def watch(self, path: Path) -> None:
        self.explicit.add(path)
        self._remember(path)
        self._sync()

    def unwatch(self, path: Path) -> bool:
        if path not in self.explicit:
            return False
        self.explicit.discard(path)
        self._sync()
        return True

    def configure(self, globs: tuple[str, ...], roots: list[Path]) -> None:
        """New globs or roots: re-expand in a worker thread. Returns at once; `ready()`
        waits for the expansion. A newer call supersedes an expansion still running."""
        if globs == self._globs and roots == self._roots:
            return
        self._globs, self._roots = globs, roots
        self._generation += 1
        if not globs:
            self._glob_files = set()
            self._sync()
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script or a unit test): nothing to block
            files = expand(roots, globs)
            self._adopt(self._generation, files, _baselines(files))
            return
        self._expansion = self._server.background.spawn(
            self._expand_off_loop(self._generation, roots, globs), "watch glob expansion"
        )

    async def _expand_off_loop(
        self, generation: int, roots: list[Path], globs: tuple[str, ...]
    ) -> None:
        def work() -> tuple[set[Path], dict[Path, str]]:
            files = expand(roots, globs)
            return files, _baselines(files)

        files, hashes = await asyncio.to_thread(work)
        self._adopt(generation, files, hashes)

    def _adopt(self, generation: int, files: set[Path], hashes: dict[Path, str]) -> None:
        """On the loop: take an expansion's result unless newer settings superseded it."""
        if generation != self._generation:
            return
        self._glob_files = files
        for path, digest in hashes.items():
            self._last_hash.setdefault(path, digest)  # a change seen meanwhile is newer
        self._sync()

    async def ready(self) -> None:
        """Wait for the glob expansion in progress, if any (commands that report the
        watched files answer with the finished list)."""
        while (expansion := self._expansion) is not None and not expansion.done():
            with contextlib.suppress(Exception):  # a failed expansion is logged by its task
                await asyncio.shield(expansion)

    def _remember(self, path: Path) -> None:
        """Baseline content, so an mtime-only touch does not start a run."""
        with contextlib.suppress(OSError):
            self._last_hash[path] = hashlib.sha256(path.read_bytes()).hexdigest()

    def _sync(self) -> None:
        """Schedule exactly the directories that hold watched files."""
        wanted = {p.parent for p in self.explicit | self._glob_files}
        if wanted and self._observer is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                self._loop = None
            from watchdog.observers import Observer

            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        if self._observer is None:
            return
        for directory in list(self._scheduled):
            if directory not in wanted:
                self._observer.unschedule(self._scheduled.pop(directory))
        for directory in wanted - set(self._scheduled):
            if directory.is_dir():
                self._scheduled[directory] = self._observer.schedule(
                    _handler(self), str(directory), recursive=False
                )

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        if self._expansion is not None:
            self._expansion.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer = None
            self._scheduled.clear()

    # -- events -----------------------------------------------------------------------
    def from_thread(self, path: Path) -> None:
        """Watchdog's thread: hand over to the loop, nothing else."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.on_disk_change, path)

    def on_disk_change(self, path: Path) -> None:
        path = path.resolve()
        if path.suffix != ".py" or not self.is_watched(path):
            return
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        delay = self._server.settings.watch_debounce_ms / 1000
        assert self._loop is not None
        self._timers[path] = self._loop.call_later(delay, self._fire, path)

    def _fire(self, path: Path) -> None:
        self._timers.pop(path, None)
        try:
            data = path.read_bytes()
        except OSError:
            return  # deleted or mid-rename: the next event will tell
        digest = hashlib.sha256(data).hexdigest()
        if self._last_hash.get(path) == digest:
            return  # touched, not changed
        self._last_hash[path] = digest
        uri = self._server.open_uri_for(path)
        if uri is not None:
            editor_text = self._server.workspace.get_text_document(uri).source
            if editor_text.encode("utf-8") == data:
                return  # the editor saved it: the editor already knows
        self._server.background.spawn(self._rerun(path), f"re-run of {path.name}")

    async def _rerun(self, path: Path) -> None:
        if self.on_change is None:
            return
        try:
            await self.on_change(path)
        except Exception as exc:  # noqa: BLE001 - a watch run must never take the server down
            log.warning("re-run after change of %s failed: %s", path, exc)
