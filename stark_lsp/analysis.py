"""Document analysis that never holds up the event loop.

Every request handler and the diagnostics need the analysis of a document: its
classification (tasks.analyze), a kernel's reference and the static diagnostics.
`ast.parse` costs about 1 ms per KB and holds the GIL from start to end (it is C
code that never yields), so parsing a 5 MB file on the loop, or in a thread,
stalls every request for seconds. Hence, in this order:

1. A cheap test (may_be_task): a file with no line starting `class Model` (ModelNew
   included), `def get_inputs` or `def get_init_inputs`, and no `stark:` comment
   cannot be a task and needs no parse (about 10 ms for 5 MB).
2. Small texts (<= INLINE_CHARS) are analysed inline: a few milliseconds at most.
3. Larger ones go to one worker process (AnalysisWorker), started on first need.
   A thread would not do: the parse holds the GIL. The worker is restarted after a
   text above RECYCLE_AFTER_CHARS, since the AST of 5 MB leaves half a gigabyte
   behind in the process that parsed it.
4. A result is kept only while the document still has the version it was computed
   for (its key); a stale one is dropped and counted. Texts above
   MAX_ANALYZED_CHARS are not analysed at all (they count as non-tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from lsprotocol import types

from engine.bench.result import EvalResult
from stark_lsp import diagnostics
from stark_lsp.diagnostics import RelatedFile
from stark_lsp.tasks import DocumentInfo, DocumentKind, ReferenceLookup, analyze, find_reference

log = logging.getLogger(__name__)

INLINE_CHARS = 20_000  # about 20 ms of parsing at worst
RECYCLE_AFTER_CHARS = 1_000_000
MAX_ANALYZED_CHARS = 10_000_000  # a parse of 10 MB peaks near 2 GB in the worker
MAX_ATTEMPTS = 3  # the text may change while the worker parses; then try again, boundedly

# A line that could make this file a task. A top-level statement starts at column 0;
# allowing leading blanks only widens the test, which is safe.
TASK_LINE = re.compile(
    r"[ \t\f]*(?:class[ \t]+Model|(?:async[ \t]+)?def[ \t]+get_(?:init_)?inputs\b)"
)
TASK_NEEDLES = ("Model", "get_inputs", "get_init_inputs")
MAX_MARKER_CHECKS = 1_000  # occurrences looked at before letting the parser decide

# ("open", open generation, version) for an open document; ("disk", digest) otherwise.
DocumentKey = tuple[Any, ...]
T = TypeVar("T")


def may_be_task(text: str) -> bool:
    """False only when the text certainly is neither a reference nor a kernel and has
    no `# stark: reference=` comment to warn about. Substring searches (milliseconds
    for 5 MB), then a look at the line of each hit; a regex with `^` over the whole
    text would take a hundred times longer."""
    if "stark:" in text:
        return True
    checks = 0
    for needle in TASK_NEEDLES:
        index = text.find(needle)
        while index >= 0:
            checks += 1
            if checks > MAX_MARKER_CHECKS:
                return True
            line_start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
            if TASK_LINE.match(text, line_start):
                return True
            index = text.find(needle, index + len(needle))
    return False


def disk_key(text: str) -> DocumentKey:
    return ("disk", hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=16).hexdigest())


@dataclass(slots=True)
class Analysis:
    """What one text of a document is: classification, reference lookup, static
    diagnostics. `key` says which text (see DocumentKey)."""

    key: DocumentKey
    info: DocumentInfo
    lookup: ReferenceLookup | None
    static: list[types.Diagnostic] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Snapshot:
    """A document's text as it is now, and the key it is analysed under."""

    text: str
    key: DocumentKey
    version: int | None  # the editor's version; None for a file read from disk
    path: Path | None  # None when the URI is not a file


def analyze_document(key: DocumentKey, text: str, path: Path | None, keep_tree: bool) -> Analysis:
    """The unit of work, inline or in the worker. `keep_tree=False` drops the AST,
    which is too big to send back between processes."""
    if len(text) > MAX_ANALYZED_CHARS or not may_be_task(text):
        return Analysis(key, DocumentInfo(kind=DocumentKind.OTHER), None)
    try:
        info = analyze(text)
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes (3.11), deep nesting
        log.warning("cannot parse %s: %s", path or "document", exc)
        return Analysis(key, DocumentInfo(kind=DocumentKind.OTHER), None)
    lookup = None
    if info.kind is DocumentKind.KERNEL and path is not None:
        lookup = find_reference(path, info)
    static = diagnostics.static_diagnostics(text, info, lookup)
    if not keep_tree:
        info.tree = None
    return Analysis(key, info, lookup, static)


def verdict_diagnostics_of(
    text: str, result: EvalResult, data: dict, files: list[RelatedFile]
) -> list[types.Diagnostic]:
    """Verdict diagnostics for a text whose tree stayed in the worker: parse again."""
    return diagnostics.verdict_diagnostics(text, analyze(text), result, data, files)


class Superseded(Exception):
    """The work was no longer wanted when its turn came."""


class WorkerFailed(Exception):
    """The worker process died, timed out or raised; the message says which."""


# What the worker may run, by name (names travel, not code).
WORKER_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "analyze_document": analyze_document,
    "verdict_diagnostics_of": verdict_diagnostics_of,
}
WORKER_TIMEOUT_S = 300.0  # far above a 10 MB parse; a wedged worker is killed
_LENGTH = 8  # bytes of the big-endian length before each pickled message


class AnalysisWorker:
    """One worker process (`python -P -m stark_lsp.analysis_worker`), started on first
    need and used one task at a time over its stdin/stdout. It ends when its stdin
    closes, so it never outlives the server, even a killed one. Work waits for its
    turn here, so work that went stale meanwhile never starts."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.runs = 0

    async def run(
        self,
        size: int,
        wanted: Callable[[], bool],
        function: Callable[..., T],
        *args: Any,
    ) -> T:
        """`function(*args)` in the worker. `size` (characters) decides recycling;
        `wanted()` is asked when the turn comes (False: Superseded)."""
        name = function.__name__
        assert WORKER_FUNCTIONS.get(name) is function, name
        async with self._lock:
            if not wanted():
                raise Superseded
            process = self._process or await self._start()
            self.runs += 1
            try:
                ok, value = await asyncio.wait_for(
                    self._call(process, name, args), WORKER_TIMEOUT_S
                )
            except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self._discard(process)
                raise WorkerFailed(f"analysis worker failed: {exc!r}") from exc
            if size > RECYCLE_AFTER_CHARS:
                self._discard(process)  # give back the memory of a big AST
            if not ok:
                raise WorkerFailed(f"analysis worker: {value}")
            return value

    async def _start(self) -> asyncio.subprocess.Process:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "stark_lsp.analysis_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return self._process

    @staticmethod
    async def _call(
        process: asyncio.subprocess.Process, name: str, args: tuple[Any, ...]
    ) -> tuple[bool, Any]:
        assert process.stdin is not None and process.stdout is not None
        payload = pickle.dumps((name, args), protocol=pickle.HIGHEST_PROTOCOL)
        process.stdin.write(len(payload).to_bytes(_LENGTH, "big") + payload)
        await process.stdin.drain()
        length = int.from_bytes(await process.stdout.readexactly(_LENGTH), "big")
        return pickle.loads(await process.stdout.readexactly(length))

    def _discard(self, process: asyncio.subprocess.Process) -> None:
        """Close its stdin (it exits at EOF); kill it if it is still busy."""
        if self._process is process:
            self._process = None
        if process.returncode is None:
            with contextlib.suppress(Exception):
                assert process.stdin is not None
                process.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # it holds nothing worth finishing

    async def aclose(self) -> None:
        """Stop the worker and wait (briefly) until it is gone."""
        process = self._process
        if process is None:
            return
        self._discard(process)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5)


def serve_worker(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The worker's loop: one pickled (name, args) in, one (ok, value) out, until EOF.
    Only the server writes to this stdin (a pipe it created), so unpickling is safe."""
    while True:
        header = stdin.read(_LENGTH)
        if len(header) < _LENGTH:
            return 0
        name, args = pickle.loads(stdin.read(int.from_bytes(header, "big")))
        try:
            reply: tuple[bool, Any] = (True, WORKER_FUNCTIONS[name](*args))
        except Exception as exc:  # noqa: BLE001 - reported to the server, which carries on
            reply = (False, f"{type(exc).__name__}: {exc}")
        payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(len(payload).to_bytes(_LENGTH, "big") + payload)
        stdout.flush()


class DocumentAnalyses:
    """The analyses of documents, current ones only, computed where they cost nothing
    to the event loop. `snapshot(uri)` reads a document's text and key (the server
    knows the workspace); it raises for a document that cannot be read."""

    def __init__(self, snapshot: Callable[[str], Snapshot]) -> None:
        self._snapshot = snapshot
        self._cache: dict[str, Analysis] = {}
        self._inflight: dict[str, tuple[DocumentKey, asyncio.Task[Analysis]]] = {}
        self._worker_keys: dict[str, DocumentKey] = {}  # texts known to need the worker
        self.worker = AnalysisWorker()
        self.stale_dropped = 0

    def is_current(self, uri: str, key: DocumentKey) -> bool:
        """Whether `key` is still the document's text. A file read from disk has no
        version: its analysis stands until the next change on disk re-reads it."""
        if key[0] == "disk":
            return True
        try:
            return self._snapshot(uri).key == key
        except Exception:  # noqa: BLE001 - closed or unreadable: nothing is current
            return False

    def forget(self, uri: str) -> None:
        self._cache.pop(uri, None)
        self._worker_keys.pop(uri, None)

    def ready(self, uri: str, snapshot: Snapshot) -> Analysis | None:
        """The current analysis when it costs the loop next to nothing (cached, a
        non-task, or a small text); None when it has to come from the worker."""
        cached = self._cache.get(uri)
        if cached is not None and cached.key == snapshot.key:
            return cached
        if self._worker_keys.get(uri) == snapshot.key:
            return None  # known from an earlier look: the cheap test costs ~10 ms on 5 MB
        text = snapshot.text
        if len(text) > MAX_ANALYZED_CHARS or not may_be_task(text):
            analysis = Analysis(snapshot.key, DocumentInfo(kind=DocumentKind.OTHER), None)
        elif len(text) > INLINE_CHARS:
            self._worker_keys[uri] = snapshot.key
            return None
        else:
            analysis = analyze_document(snapshot.key, text, snapshot.path, keep_tree=True)
        self._cache[uri] = analysis
        return analysis

    async def current(self, uri: str) -> Analysis:
        """The analysis of the document's text as it is now. When the text changes
        while the worker parses, that result is dropped and the newer text analysed,
        in at most MAX_ATTEMPTS rounds; then the latest result is returned, even if
        stale (a request about a document still being typed into gets an answer; its
        key says it is stale, so it is never published)."""
        latest: Analysis | None = None
        for _ in range(MAX_ATTEMPTS):
            snapshot = self._snapshot(uri)
            ready = self.ready(uri, snapshot)
            if ready is not None:
                return ready
            running = self._inflight.get(uri)
            if running is None:
                task = asyncio.ensure_future(self._run_in_worker(uri, snapshot))
                running = self._inflight[uri] = (snapshot.key, task)
            # shielded: a cancelled request must not cancel work others wait for, and
            # work under way for an older text cannot be stopped anyway: wait, look again
            latest = await asyncio.shield(running[1])
            if running[0] == snapshot.key and self.is_current(uri, latest.key):
                return latest
        assert latest is not None
        return latest

    async def _run_in_worker(self, uri: str, snapshot: Snapshot) -> Analysis:
        try:
            try:
                analysis = await self.worker.run(
                    len(snapshot.text),
                    lambda: self.is_current(uri, snapshot.key),
                    analyze_document,
                    snapshot.key,
                    snapshot.text,
                    snapshot.path,
                    False,
                )
            except Superseded:  # the text changed while this waited for the worker
                self.stale_dropped += 1
                return Analysis(("superseded",), DocumentInfo(kind=DocumentKind.OTHER), None)
            except Exception as exc:  # noqa: BLE001 - a crashed worker must not crash requests
                log.warning("analysis of %s failed in the worker: %r", uri, exc)
                analysis = Analysis(snapshot.key, DocumentInfo(kind=DocumentKind.OTHER), None)
            if self.is_current(uri, snapshot.key):
                self._cache[uri] = analysis
            else:
                self.stale_dropped += 1
                log.debug("dropped the stale analysis of %s (%s)", uri, snapshot.key)
            return analysis
        finally:
            if self._inflight.get(uri, (None,))[0] == snapshot.key:
                del self._inflight[uri]

    def in_flight(self) -> int:
        return len(self._inflight)

    async def aclose(self) -> None:
        await self.worker.aclose()
