"""`SearchConfig`: everything that shapes a search, and the search's defaults.

Each default is defined once: the selection policy's in `engine.search.tree` (re-exported
here), the rest below. The command line reads these for its flags' defaults and help, so
`stark optimize` and a library caller get the same search.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.bench.config import EvalConfig
from engine.search import context as ctx
from engine.search.tree import (
    EPSILON,
    LEADER_TOPK,
    LEAF_BIAS,
    MAX_REEMITS,
    N_CHILD,
    ROOT_LIMIT,
    StarkTree,
)

__all__ = [
    "CONTEXT_BUDGET",
    "Cancelled",
    "EPSILON",
    "LEADER_TOPK",
    "LEAF_BIAS",
    "MAX_REEMITS",
    "N_CHILD",
    "PARALLEL",
    "ROOT_LIMIT",
    "ROUNDS",
    "SEED",
    "SearchConfig",
    "SearchError",
]

ROUNDS = 10  # rounds including the seed (round 0)
SEED = 0
PARALLEL = 1  # expansions in flight at once (1: one round after another)
CONTEXT_BUDGET = ctx.DEFAULT_BUDGET_CHARS  # characters of search history per prompt
MIN_CONTEXT_BUDGET = 1000


class SearchError(RuntimeError):
    """The task cannot go on (the benchmarker harness is broken, the state is unreadable)."""


class Cancelled(BaseException):
    """The search stopped (another round failed the task): an expansion still in flight
    ends at its next agent call or benchmark. A BaseException, so no handler of agent or
    benchmark errors takes it for a node's failure."""


@dataclass(slots=True)
class SearchConfig:
    """Everything that shapes a search; saved in tree.json so a resume uses the same."""

    rounds: int = ROUNDS
    seed: int = SEED
    epsilon: float = EPSILON
    root_limit: int = ROOT_LIMIT
    leaf_bias: float = LEAF_BIAS
    leader_topk: int = LEADER_TOPK
    n_child: int = N_CHILD
    max_reemits: int = MAX_REEMITS
    # re-measure the best kernel against torch.compile too (Inductor: slow to build on CPU)
    compile_baseline: bool = True
    context_budget: int = CONTEXT_BUDGET
    error_tail_chars: int = ctx.ERROR_TAIL_CHARS
    # Expansions (agent calls + benchmark) in flight at once; rounds still commit in order.
    parallel: int = PARALLEL
    eval_config: EvalConfig = field(default_factory=lambda: EvalConfig(profile=True))

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1 (round 0 is the seed), not {self.rounds}")
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1, not {self.parallel}")
        if self.context_budget < MIN_CONTEXT_BUDGET:
            raise ValueError(f"context_budget must be at least {MIN_CONTEXT_BUDGET} characters")

    def make_tree(self) -> StarkTree:
        return StarkTree(
            epsilon=self.epsilon,
            root_limit=self.root_limit,
            leaf_bias=self.leaf_bias,
            leader_topk=self.leader_topk,
            n_child=self.n_child,
            max_reemits=self.max_reemits,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["eval_config"] = self.eval_config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["eval_config"] = EvalConfig.from_dict(values.get("eval_config") or {})
        return cls(**values)
