"""The STARK tree search: what a task does between its reference and its summary.

loop.py          StarkSearch: the run loop (seed, select, expand, commit, finish)
expansions.py    seed / optimize (plan, code) / debug steps; shared node and debug request
calls.py         agent calls: recording, parsing, one repair of a malformed reply
benchmarking.py  judging a node's kernel; duplicate kernels reuse their twin's verdict
state.py         committing a node, tree.json, reading a saved state to resume
finish.py        score curve, re-measurement of the best kernel, TaskSummary
config.py        SearchConfig and the search defaults (defined once)
tree.py, node.py the tree, its nodes and the selection policy
context.py       what history each prompt gets, within a character budget
parsing.py       reading plan and code replies
diagnosis.py     a failed node's diagnosis for the debug agent
equivalence.py   is a candidate just the reference (a baseline node)?
reference.py     reading and checking a reference before a search spends on it
remeasure.py     fresh interleaved evaluations of the best kernel
trace_guard.py   trace writes that never end a search
"""

from engine.search.config import SearchConfig, SearchError
from engine.search.loop import StarkSearch

__all__ = ["SearchConfig", "SearchError", "StarkSearch"]
