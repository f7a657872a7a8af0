"""A copy of the reference is not a kernel: `is_reference_copy` and the `baseline` label."""

from __future__ import annotations

import pytest

from engine.agents.render import render_module
from engine.agents.transforms import CATALOGUE
from engine.bench.result import EvalResult, TimingStats
from engine.search.equivalence import is_behavioural_copy, is_reference_copy
from engine.search.node import StarkNode
from engine.search.state import is_baseline
from tests.search.conftest import TINY_REFERENCE

MODEL_BODY = TINY_REFERENCE.split("class Model(nn.Module):", 1)[1].split("\n\ndef ", 1)[0]

COPIES = {
    "subclass, pass": TINY_REFERENCE + "\n\nclass ModelNew(Model):\n    pass\n",
    "subclass, docstring": TINY_REFERENCE + '\n\nclass ModelNew(Model):\n    """Fast!"""\n',
    "body copied as ModelNew": (
        "import torch\nimport torch.nn as nn\n\n# my optimised kernel\n"
        "class ModelNew(nn.Module):"
        + MODEL_BODY.replace("super().__init__()", "super(ModelNew, self).__init__()")
    ),
    "body copied, no type hints": (
        "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n\n"
        "    def forward(self, x):\n        '''relu, scaled'''\n"
        "        return torch.relu(x) * 2.0 + 1.0  # fused\n"
    ),
    "wraps a Model": TINY_REFERENCE
    + (
        "\n\nclass ModelNew(nn.Module):\n    def __init__(self, *args):\n"
        "        super().__init__()\n        self.inner = Model(*args)\n\n"
        "    def forward(self, *inputs):\n        return self.inner(*inputs)\n"
    ),
    "calls Model.forward": TINY_REFERENCE
    + (
        "\n\nclass ModelNew(Model):\n    def forward(self, x):\n"
        "        return Model.forward(self, x)\n"
    ),
    "calls super().forward": TINY_REFERENCE
    + (
        "\n\nclass ModelNew(Model):\n    def __init__(self, *a, **k):\n"
        "        super().__init__(*a, **k)\n\n    def forward(self, *xs):\n"
        "        out = super().forward(*xs)\n        return out\n"
    ),
    "no __init__": (
        "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
        "    def forward(self, x):\n        return torch.relu(x) * 2.0 + 1.0\n"
    ),
    "renamed argument": (
        "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n\n"
        "    def forward(self, inp):\n        return torch.relu(inp) * 2.0 + 1.0\n"
    ),
    "super().forward by keyword": TINY_REFERENCE
    + "\n\nclass ModelNew(Model):\n    def forward(self, x):\n        return super().forward(x=x)\n",
    "offline seed": render_module(
        TINY_REFERENCE, [], title="Seed", meta={"role": "seed", "added": [], "removed": []}
    ),
}

NOT_COPIES = {
    "different maths": TINY_REFERENCE
    + (
        "\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n"
        "        return torch.relu(x).mul_(2.0).add_(1.0)\n"
    ),
    "wraps a Model but changes the input": TINY_REFERENCE
    + (
        "\n\nclass ModelNew(nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.inner = Model()\n\n"
        "    def forward(self, x):\n        return self.inner(x.contiguous() * 1.0)\n"
    ),
    "changes Model, then subclasses it": TINY_REFERENCE.replace("* 2.0", "* 3.0")
    + "\n\nclass ModelNew(Model):\n    pass\n",
    "torch.compile wrapper": TINY_REFERENCE
    + (
        "\n\nclass ModelNew(Model):\n    def __init__(self):\n        super().__init__()\n"
        "        self._fast = torch.compile(super().forward)\n\n"
        "    def forward(self, x):\n        return self._fast(x)\n"
    ),
    "super().forward, another keyword": TINY_REFERENCE
    + "\n\nclass ModelNew(Model):\n    def forward(self, x, y):\n        return super().forward(x=y)\n",
    "renamed argument, different maths": (
        "import torch\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n"
        "    def forward(self, inp):\n        return torch.relu(inp) * 3.0 + 1.0\n"
    ),
    "no ModelNew": TINY_REFERENCE,
    "syntax error": "class ModelNew(:\n",
}


@pytest.mark.parametrize("name", list(COPIES))
def test_copies_of_the_reference_are_recognised(name: str) -> None:
    assert is_reference_copy(COPIES[name], TINY_REFERENCE), name


@pytest.mark.parametrize("name", list(NOT_COPIES))
def test_real_candidates_are_not_copies(name: str) -> None:
    assert not is_reference_copy(NOT_COPIES[name], TINY_REFERENCE), name


@pytest.mark.parametrize("transform", sorted(CATALOGUE))
def test_offline_transformations_are_not_copies(transform: str) -> None:
    code = render_module(TINY_REFERENCE, [transform], title="t", meta={})
    assert not is_reference_copy(code, TINY_REFERENCE)


def verdict(ref_ms: float, new_ms: float, iqr: float, max_abs_err: float | None) -> EvalResult:
    return EvalResult(
        compiled=True,
        correct=True,
        speedup=ref_ms / new_ms,
        max_abs_err=max_abs_err,
        ref_ms=TimingStats(median=ref_ms, iqr=iqr, mean=ref_ms, min=ref_ms, n=30),
        new_ms=TimingStats(median=new_ms, iqr=iqr, mean=new_ms, min=new_ms, n=30),
    )


F_RELU = (
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n\n"
    "class ModelNew(nn.Module):\n    def forward(self, x):\n"
    "        x = x.clone()\n        return F.relu(x) * 2.0 + 1.0\n"
)


def test_a_copy_in_all_but_source_is_a_baseline_by_its_behaviour() -> None:
    """`F.relu` after a `clone()`: no AST rule sees it, but bit-identical outputs and a
    1.02x inside the noise make it the reference again (old code: "the best kernel")."""
    assert not is_reference_copy(F_RELU, TINY_REFERENCE)
    node = StarkNode(node_id=1, parent_id=0, code=F_RELU, metrics=verdict(10.0, 9.8, 0.5, 0.0))
    assert is_baseline(node, TINY_REFERENCE)


def test_the_behavioural_rule_needs_exact_outputs_and_a_speedup_inside_the_noise() -> None:
    assert is_behavioural_copy(verdict(10.0, 9.8, 0.5, 0.0))
    assert is_behavioural_copy(verdict(10.0, 10.2, 0.5, 0.0))  # slower, within noise
    assert not is_behavioural_copy(verdict(10.0, 9.8, 0.5, 1e-7))  # rounds differently
    assert not is_behavioural_copy(verdict(10.0, 9.8, 0.5, None))  # not measured
    assert not is_behavioural_copy(verdict(10.0, 5.0, 0.5, 0.0))  # a win beyond the IQRs
    assert not is_behavioural_copy(verdict(10.0, 20.0, 0.5, 0.0))  # slower beyond them
    wrong = verdict(10.0, 9.8, 0.5, 0.0)
    wrong.correct = False
    assert not is_behavioural_copy(wrong)
    assert not is_behavioural_copy(None)
