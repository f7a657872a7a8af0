"""Old path of the re-measurement figures, now `engine.artifacts.remeasured`."""

# transitional: stark_lsp still imports this path; removed when stark_lsp is re-laid
from engine.artifacts.remeasured import Comparison, Remeasured, Timing  # noqa: F401
