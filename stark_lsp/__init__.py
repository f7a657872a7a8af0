"""STARK language server: optimize, debug and watch kernels from any editor.

`python -m stark_lsp` speaks LSP over stdio (`--tcp HOST:PORT` for TCP). The
server never imports torch: every job is an engine subprocess."""

__version__ = "0.1.0"
