"""`RichProgress`: the terminal progress display of `stark optimize` and `stark batch`,
fed by the event stream. rich loads only when a display is shown."""

from __future__ import annotations

from typing import Any

from engine.artifacts.events import (
    BestImproved,
    Event,
    LLMCallStarted,
    NodeBenchmarked,
    NodeSelected,
    RoundFinished,
    TaskStarted,
)


class RichProgress:
    """A terminal progress display fed by the event stream."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(stderr=False)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[name]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._tasks: dict[str, Any] = {}
        self.progress.start()

    def __call__(self, event: Event) -> None:
        if isinstance(event, TaskStarted):
            self._tasks[event.task_id] = self.progress.add_task(
                "", total=event.rounds, name=event.task_id, status="starting"
            )
            return
        task = self._tasks.get(event.task_id)
        if task is None:
            return
        if isinstance(event, NodeSelected):
            self.progress.update(
                task,
                status=f"round {event.round}: {event.action} node {event.node_id} ({event.mode})",
            )
        elif isinstance(event, LLMCallStarted):
            self.progress.update(task, status=f"round {event.round}: {event.role} ({event.model})")
        elif isinstance(event, NodeBenchmarked):
            node = event.node
            verdict = f"{node.speedup:.2f}x" if node.runnable else f"failed: {node.error}"
            self.console.print(
                f"  round {event.round}: node {node.id} ({node.phase}) {verdict}"[:200]
            )
        elif isinstance(event, BestImproved):
            self.console.print(f"  [green]best so far: {event.speedup:.2f}x (node {event.node_id})")
        elif isinstance(event, RoundFinished):
            best = f"{event.best_speedup:.2f}x" if event.best_speedup else "-"
            self.progress.update(
                task,
                completed=event.round + 1,
                status=f"best {best} · {event.buggy} buggy of {event.nodes}",
            )

    def close(self) -> None:
        self.progress.stop()
