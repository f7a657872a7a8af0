"""`python -P -m stark_lsp.analysis_worker`: the process that parses large documents
for the server (stark_lsp.analysis.AnalysisWorker). It reads requests on stdin and
ends at EOF, i.e. when the server closes the pipe or is gone. It never imports torch."""

from __future__ import annotations

import sys

from stark_lsp.analysis import serve_worker

if __name__ == "__main__":
    sys.exit(serve_worker(sys.stdin.buffer, sys.stdout.buffer))
