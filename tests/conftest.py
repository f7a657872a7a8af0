"""Session-wide test settings.

The offline agent writes real C++ kernels by default; each distinct kernel is a
load_inline build (~25 s on the 2-core CI machine). Tests of everything else that merely
uses the offline agent (the search loop, events, the language server, batches) run it with
kernel writing off, via the environment so that engine subprocesses inherit it. The kernel
writer's own tests (tests/agents/kernels/, tests/search/test_kernel_search.py) turn it back
on explicitly.
"""

from __future__ import annotations

import os

os.environ.setdefault("STARK_OFFLINE_KERNELS", "0")
