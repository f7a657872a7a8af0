"""The task's score curve: every node's score by round and the best score so far.

Rendered off-screen (matplotlib's Agg backend) so it works on headless machines. It takes
any objects with a node's round, id, score and verdict (`ScoredNode`), so the artifacts layer
needs nothing from the search; matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol


class ScoredNode(Protocol):
    """What the curve needs of a search node (`engine.search.node.StarkNode` has it)."""

    node_id: int
    created_round: int
    score: float

    @property
    def runnable(self) -> bool: ...


def plot_score_curve(nodes: Iterable[ScoredNode], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    nodes = sorted(nodes, key=lambda n: (n.created_round, n.node_id))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        rounds = [n.created_round for n in nodes]
        best: list[float] = []
        running = 0.0
        for node in nodes:
            running = max(running, node.score)
            best.append(running)
        ok = [n for n in nodes if n.runnable]
        bad = [n for n in nodes if not n.runnable]
        ax.step(rounds, best, where="post", color="tab:blue", label="best score so far")
        ax.scatter(
            [n.created_round for n in ok],
            [n.score for n in ok],
            color="tab:green",
            zorder=3,
            label="correct node (score = speedup)",
        )
        ax.scatter(
            [n.created_round for n in bad],
            [0.0] * len(bad),
            color="tab:red",
            marker="x",
            zorder=3,
            label="failed node (score 0)",
        )
        ax.axhline(1.0, color="grey", linestyle=":", linewidth=1, label="reference speed")
        ax.set_xlabel("round")
        ax.set_ylabel("score (speedup vs reference)")
        ax.set_title(title or "STARK score curve")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp)
        tmp.replace(path)
    finally:
        plt.close(fig)
    return path
