"""The rounds of a search, up to `SearchConfig.parallel` in flight at once (`RoundRunner`).

Each dispatched round is a `Dispatch` (what was selected, for which round and node id, and
how many nodes the tree held then) with its expansion running on a thread of its own; with
width 1 it runs inline, on the caller's thread, so the sequential search stays exactly what
it was. Rounds are handed out and taken back in round order: `next_done` waits for the
*oldest* round even when a younger one finished first, so nodes are committed in id order
and the tree (like tree.json) is always a prefix of what the run will build. The expansion
threads are daemons: a task that fails with rounds still in flight does not wait for their
calls to come back (they stop at their next agent call or benchmark, see `Cancelled`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from engine.search.benchmarking import NodeBenchmarker
from engine.search.expansions import Expansions, PreparedRound
from engine.search.node import StarkNode
from engine.search.tree import Selection, StarkTree


@dataclass(slots=True)
class Dispatch:
    """A round handed out: the selection it expands, its node id, and `after`: how many
    nodes the tree held when it was selected (its prompts' context is that prefix). Saved in
    tree.json while in flight, so a resume redoes it exactly."""

    round: int
    node_id: int
    parent_id: int
    mode: str
    source: str
    candidates: list[int] = field(default_factory=list)
    after: int = 0

    @classmethod
    def of(cls, selection: Selection, round_: int, node_id: int, after: int) -> Dispatch:
        return cls(
            round=round_,
            node_id=node_id,
            parent_id=selection.node.node_id,
            mode=selection.mode,
            source=selection.source,
            candidates=list(selection.candidates),
            after=after,
        )

    def selection(self, tree: StarkTree) -> Selection:
        """The selection again, on `tree` (a resumed run's, where the parent is committed)."""
        return Selection(tree.nodes[self.parent_id], self.mode, self.source, self.candidates)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "node_id": self.node_id,
            "parent_id": self.parent_id,
            "mode": self.mode,
            "source": self.source,
            "candidates": list(self.candidates),
            "after": self.after,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dispatch:
        return cls(
            round=int(data["round"]),
            node_id=int(data["node_id"]),
            parent_id=int(data["parent_id"]),
            mode=str(data["mode"]),
            source=str(data["source"]),
            candidates=[int(i) for i in data.get("candidates", [])],
            after=int(data["after"]),
        )


class InFlight:
    """Up to `width` rounds at once, oldest first."""

    def __init__(self, width: int, next_round: int) -> None:
        if width < 1:
            raise ValueError(f"width must be >= 1, not {width}")
        self.width = width
        self.next_round = next_round  # the round the next dispatch gets
        self._rounds: list[tuple[Dispatch, Future[StarkNode]]] = []

    def __len__(self) -> int:
        return len(self._rounds)

    def has_room(self) -> bool:
        return len(self._rounds) < self.width

    def dispatches(self) -> list[Dispatch]:
        return [dispatch for dispatch, _ in self._rounds]

    def pending_children(self) -> dict[int, int]:
        """Parent id -> children in flight: what selection counts as pending."""
        counts: dict[int, int] = {}
        for dispatch, _ in self._rounds:
            counts[dispatch.parent_id] = counts.get(dispatch.parent_id, 0) + 1
        return counts

    def submit(self, dispatch: Dispatch, work: Callable[[], StarkNode]) -> None:
        """Start the round's expansion: inline at width 1, else on its own thread."""
        if dispatch.round != self.next_round:
            raise ValueError(f"round {dispatch.round} dispatched, expected {self.next_round}")
        future: Future[StarkNode] = Future()
        self._rounds.append((dispatch, future))
        self.next_round += 1
        if self.width == 1:
            _run(work, future)
            return
        thread = threading.Thread(
            target=_run, args=(work, future), name=f"stark-round-{dispatch.round}", daemon=True
        )
        thread.start()

    def next_done(self) -> tuple[Dispatch, StarkNode]:
        """The oldest round's node once its expansion ended (its exception re-raised)."""
        dispatch, future = self._rounds[0]
        node = future.result()
        self._rounds.pop(0)
        return dispatch, node


class RoundRunner:
    """Runs rounds `next_round`.. of one search: fills the free slots, commits the oldest
    round once it is done, repeats (with one slot: select, expand, commit, as the
    sequential search always did). Selections happen only right after a commit (or at the
    start), from the committed tree and the rounds in flight, so they do not depend on which
    expansion finishes first. `resumed`: a resume's saved in-flight rounds, redone first with
    their selections and contexts as they were."""

    def __init__(
        self,
        *,
        width: int,
        next_round: int,
        tree: StarkTree,
        expansions: Expansions,
        bench: NodeBenchmarker,
        announce: Callable[[Selection, int], None],
        commit: Callable[[StarkNode, int], None],
        log: Callable[[str], None],
        resumed: list[Dispatch] | None = None,
    ) -> None:
        self.flight = InFlight(width, next_round)
        self.next_commit = next_round
        self.tree = tree
        self.expansions = expansions
        self.bench = bench
        self.announce = announce
        self.commit = commit
        self.log = log
        self.resumed = list(resumed or [])

    def dispatches(self) -> list[Dispatch]:
        """The rounds handed out but not committed, oldest first: those in flight and a
        resume's saved ones not yet redone (what tree.json lists for the next resume)."""
        return self.flight.dispatches() + self.resumed

    def run(self, until: int) -> None:
        while self.next_commit < until:
            self._dispatch(until)
            if not self.flight:
                self.log(f"round {self.next_commit}: every node is throttled or pruned; stopping")
                return
            dispatch, node = self.flight.next_done()
            self.next_commit = dispatch.round + 1
            self.commit(node, dispatch.round)

    def _dispatch(self, until: int) -> None:
        """Hand out rounds while a slot is free; nothing when no node may be expanded now
        (a slot frees at the next commit)."""
        flight = self.flight
        while flight.has_room() and flight.next_round < until:
            if self.resumed:
                dispatch = self.resumed.pop(0)
                selection = dispatch.selection(self.tree)
                view = self.tree.prefix(dispatch.after)
            else:
                selection = self.tree.select_node(flight.pending_children())
                if selection is None:
                    return
                node_id = self.tree.new_id() + len(flight)
                after = len(self.tree.nodes)
                dispatch = Dispatch.of(selection, flight.next_round, node_id, after)
                view = self.tree
            self.announce(selection, dispatch.round)
            prepared = self.expansions.prepare(selection, dispatch.round, dispatch.node_id, view)
            self.bench.expect(dispatch.node_id)
            flight.submit(dispatch, lambda p=prepared: self._expand(p))

    def _expand(self, prepared: PreparedRound) -> StarkNode:
        """One round's agent calls and benchmark (on its own thread when parallel)."""
        try:
            return self.expansions.execute(prepared)
        finally:
            self.bench.settle(prepared.node.node_id)


def _run(work: Callable[[], StarkNode], future: Future[StarkNode]) -> None:
    future.set_running_or_notify_cancel()
    try:
        future.set_result(work())
    except BaseException as exc:  # noqa: BLE001 - handed to the coordinating thread
        future.set_exception(exc)
