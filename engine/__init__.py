"""STARK: search-based kernel optimisation with an honest benchmarker.

`engine` is a library with no editor knowledge: the tree search, agents, task
artifacts and the event stream live here; `engine.bench` judges candidates.
"""

__version__ = "0.1.0"
