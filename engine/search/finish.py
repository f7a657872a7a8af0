"""The end of a task: the score-curve figure, a fresh re-measurement of the best kernel,
and the `TaskSummary` built from the tree and usage.csv.

The best kernel is measured again, interleaved against eager and (unless
`compile_baseline` is off) against torch.compile (`engine.search.remeasure`): those fresh
figures are the task's reported speedup; the search's own maximum stays in the summary as
`search_best_speedup`. Neither a plotting nor a re-measurement problem loses the run.
"""

from __future__ import annotations

from typing import Any

from engine.artifacts.generated_code import generated_languages
from engine.artifacts.plotting import plot_score_curve
from engine.artifacts.remeasured import Remeasured
from engine.artifacts.summary import TaskSummary
from engine.artifacts.taskdir import TaskDir
from engine.bench.config import EvalConfig
from engine.search.config import SearchConfig
from engine.search.node import StarkNode
from engine.search.remeasure import remeasure
from engine.search.tree import StarkTree


def draw_score_curve(task: TaskDir, tree: StarkTree, op_name: str) -> str | None:
    """figures/score_curve.png, or None (no nodes, or drawing failed: logged)."""
    if not tree.nodes:
        return None
    try:
        return str(
            plot_score_curve(
                tree.nodes.values(),
                task.figures_dir / "score_curve.png",
                title=f"{op_name}: STARK score by round",
            )
        )
    except Exception as exc:  # noqa: BLE001 - a plotting problem must not lose the run
        task.log(f"could not draw the score curve: {exc}")
        return None


def remeasure_best(
    task: TaskDir,
    benchmarker: Any,
    reference_src: str,
    best: StarkNode,
    config: EvalConfig,
    *,
    compile_baseline: bool,
) -> Remeasured:
    """Fresh interleaved figures for the best kernel; a failure is recorded, never fatal."""
    task.log(
        f"re-measuring node {best.node_id} against eager"
        + (" and torch.compile" if compile_baseline else "")
    )
    try:
        measured = remeasure(
            benchmarker, reference_src, best.code, config, compile_baseline=compile_baseline
        )
    except Exception as exc:  # noqa: BLE001 - the search's result stands without it
        measured = Remeasured(error=task.redact(f"{type(exc).__name__}: {exc}"))
    if measured.error:
        measured.error = task.redact(measured.error)
    task.log(f"re-measured node {best.node_id}: {measured.text() or '-'}")
    return measured


def build_summary(
    *,
    task: TaskDir,
    tree: StarkTree,
    config: SearchConfig,
    reference_path: str,
    remeasured: Remeasured | None,
    rounds_run: int,
    score_trace: list[list[float]],
    agent_kind: str,
    agent_fallback: str | None,
    model: str,
    device: str,
    figure: str | None,
    wall_s: float,
) -> TaskSummary:
    """The task's summary: the best node's re-measured figures and the run's counts."""
    best = tree.best()
    nodes = list(tree.nodes.values())
    usage = task.read_usage()
    llm_rows = [r for r in usage if _call_kind(r, agent_kind) == "llm"]
    cfg = config.eval_config
    return TaskSummary(
        task_id=task.task_id,
        reference=reference_path,
        task_dir=str(task.root),
        finished=True,
        best_speedup=(remeasured.vs_eager.speedup if remeasured and remeasured.vs_eager else None),
        search_best_speedup=best.score if best else None,
        remeasured=remeasured,
        best_node=best.node_id if best else None,
        best_round=best.created_round if best else None,
        best_kernel=str(task.best_kernel_path) if best else None,
        best_generated=generated_languages(best.code) if best else [],
        correct=best is not None,
        nodes=len(nodes),
        correct_nodes=sum(1 for n in nodes if n.runnable),
        buggy_nodes=sum(1 for n in nodes if n.buggy),
        baseline_nodes=sum(1 for n in nodes if n.baseline),
        rounds=config.rounds,
        rounds_run=rounds_run,
        llm_calls=len(llm_rows),
        agent_calls=len(usage) - len(llm_rows),
        failed_llm_calls=sum(1 for r in llm_rows if r.get("ok") == "0"),
        prompt_tokens=_sum_tokens(usage, "prompt_tokens"),
        completion_tokens=_sum_tokens(usage, "completion_tokens"),
        cost_usd=_sum_cost(usage),
        agent=agent_kind,
        agent_fallback=agent_fallback,
        model=model,
        device=device,
        seed=config.seed,
        atol=cfg.atol,
        rtol=cfg.rtol,
        score_trace=[list(point) for point in score_trace],
        figure=figure,
        wall_s=wall_s,
    )


def _call_kind(row: dict[str, str], agent_kind: str) -> str:
    """A usage.csv row's kind; rows written before the column existed by the task's agent."""
    kind = row.get("kind") or ""
    if kind in ("llm", "agent"):
        return kind
    return "agent" if agent_kind == "offline" else "llm"


def _sum_tokens(usage: list[dict[str, str]], column: str) -> int | None:
    """The column's total over the calls that reported it; None when no call did (an
    offline run has no tokens to count, which is not the same as zero)."""
    counts = [int(r[column]) for r in usage if r.get(column)]
    return sum(counts) if counts else None


def _sum_cost(usage: list[dict[str, str]]) -> float | None:
    costs = [float(r["cost_usd"]) for r in usage if r.get("cost_usd")]
    return round(sum(costs), 6) if costs else None
