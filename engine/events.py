"""Old path of `engine.artifacts.events` (the typed event stream)."""

# transitional: stark_lsp still imports this path; removed when stark_lsp is re-laid
from engine.artifacts.events import *  # noqa: F403
