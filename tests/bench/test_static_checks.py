"""The advisory AST pre-checks: each pattern is flagged (also through import
aliases), and nothing honest is (the bundled examples and a clean C++ kernel)."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from engine.bench.static_checks import FLAG_ORDER, scan

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py")) + sorted(
    (ROOT / "examples" / "candidates").glob("*.py")
)

FLAGGED: dict[str, list[str]] = {
    "try_except_fallback": [
        """
        try:
            out = my_kernel(x)
        except Exception:
            out = torch.relu(x)
        """,
        """
        try:
            import kernel_ext
        except ImportError:
            kernel_ext = None
        """,
        """
        try:
            y = f(x)
        except* ValueError:
            pass
        """,
    ],
    "timer_patch": [
        "import time\ntime.perf_counter = lambda: 0.0",
        "import time as t\nt.perf_counter_ns = lambda: 0",
        "import time\nsetattr(time, 'time', lambda: 0.0)",
        "import time\ntime.monotonic = time.time",
        "import torch\ntorch.cuda.Event.elapsed_time = lambda self, other: 0.0",
        "import torch\ntorch.cuda.Event = object",
        "from torch import cuda\ncuda.synchronize = lambda: None",
        "from unittest import mock\nmock.patch('time.perf_counter', lambda: 0.0).start()",
        "import time\ntime.__dict__['perf_counter'] = lambda: 0.0",
    ],
    "threading": [
        "import threading\nthreading.Thread(target=f).start()",
        "from concurrent.futures import ThreadPoolExecutor",
        "import _thread",
        "mod = __import__('threading')",
        'src = "#include <thread>\\nvoid f() { std::thread t(g); t.detach(); }"',
    ],
    "multiprocessing": [
        "import multiprocessing as mp\nmp.Process(target=f).start()",
        "import subprocess\nsubprocess.run(['ls'])",
        "import os\npid = os.fork()",
        "import os\nos.system('true')",
        "from os import execv",
    ],
    "tensor_subclass": [
        "import torch\nclass Sneaky(torch.Tensor):\n    pass",
        "from torch import Tensor as T\nclass Sneaky(T):\n    pass",
        """
        class Wrapper:
            @classmethod
            def __torch_function__(cls, func, types, args=(), kwargs=None):
                return func(*args, **(kwargs or {}))
        """,
    ],
    "stream_creation": [
        "import torch\ns = torch.cuda.Stream()",
        "import torch\nwith torch.cuda.stream(s):\n    pass",
        "from torch import cuda\nside = cuda.Stream(priority=-1)",
        'src = "cudaStream_t s; cudaStreamCreate(&s);"',
        'src = "auto s = at::cuda::getStreamFromPool();"',
    ],
    "reads_harness_files": [
        "data = open('../result.json').read()",
        "from pathlib import Path\nreq = Path('request.json').read_text()",
        "import inspect\nframe = inspect.currentframe().f_back",
        "import sys\ncaller = sys._getframe(1)",
        "import gc\nobjs = gc.get_objects()",
    ],
    "imports_harness": [
        "import engine.bench.correctness as harness",
        "from engine.bench import timing",
    ],
    "torch_patch": [
        "import torch\ntorch.relu = lambda t: t * 0",
        "import torch.nn.functional as F\nF.gelu = my_gelu",
        "import torch\nsetattr(torch.Tensor, 'add', f)",
        "import torch\ntorch.backends.cuda.matmul.allow_tf32 = True",
    ],
    "raw_memory_access": [
        "import ctypes\nctypes.string_at(0)",
        "import ctypes\nctypes.memmove(dst, src, n)",
        "import ctypes\nvalue = ctypes.c_int64.from_address(addr)",
    ],
}

HONEST_SNIPPETS = [
    "import torch\nclass ModelNew(torch.nn.Module):\n    pass",
    "import time\nstart = time.perf_counter()",  # reading a timer is fine; patching is not
    "from torch import nn\nclass Block(nn.Module):\n    pass",
    'src = "#pragma omp parallel for\\nfor (int i = 0; i < n; ++i) y[i] = x[i];"',
    "try:\n    f()\nexcept ValueError:\n    raise",  # re-raising hides nothing
    "import torch\ns = torch.cuda.current_stream()",
    "x = {'time': 1}\nx['time'] = 2",
    "import torch\nclass M(torch.nn.Module):\n    def f(self):\n        self.relu = torch.relu",
    "import ctypes\nlib = ctypes.CDLL('./kernel.so')",  # loading a library is fine
]


@pytest.mark.parametrize(
    ("flag", "source"),
    [(flag, source) for flag, sources in FLAGGED.items() for source in sources],
)
def test_pattern_is_flagged(flag: str, source: str) -> None:
    assert flag in scan(dedent(source))


@pytest.mark.parametrize("source", HONEST_SNIPPETS)
def test_honest_snippet_is_not_flagged(source: str) -> None:
    assert scan(source) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_bundled_examples_are_not_flagged(path: Path) -> None:
    assert scan(path.read_text()) == []


def test_syntax_error_gives_no_flags() -> None:
    assert scan("def broken(:\n    pass") == []
    assert scan("x = '\0'") == []  # a NUL byte: ast.parse raises ValueError on 3.11


def test_flags_come_in_a_stable_order_without_duplicates() -> None:
    source = dedent(
        """
        import threading, time, torch
        class S(torch.Tensor):
            pass
        time.perf_counter = lambda: 0
        time.time = lambda: 0
        try:
            pass
        except Exception:
            torch.relu(x)
        threading.Thread(target=f)
        """
    )
    flags = scan(source)
    assert flags == ["try_except_fallback", "timer_patch", "threading", "tensor_subclass"]
    assert flags == [flag for flag in FLAG_ORDER if flag in flags]


def test_adversarial_test_candidates_are_flagged() -> None:
    """The repo's own cheat candidates that use these patterns are caught statically too."""
    folder = Path(__file__).parent / "adversarial"
    expected = {
        "timer_patch.py": "timer_patch",
        "subclass.py": "tensor_subclass",
        "background_thread.py": "threading",
        "patch_harness.py": "imports_harness",
        "torch_patch.py": "torch_patch",
    }
    for name, flag in expected.items():
        path = folder / name
        if path.exists():
            assert flag in scan(path.read_text()), name
