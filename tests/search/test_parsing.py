"""Reply parsing: accepted shapes and the precise errors a repair prompt will quote."""

from __future__ import annotations

import json

import pytest

from engine.search.parsing import (
    ANCHOR_BEGIN,
    ANCHOR_END,
    ParseError,
    parse_code_reply,
    parse_plan_reply,
    strip_anchors,
)

PARENT = "import torch\n\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
ANCHORED = PARENT.replace(
    "        return x * 2\n",
    f"        {ANCHOR_BEGIN}\n        return x * 2\n        {ANCHOR_END}\n",
)
PLAN = {"title": "fuse", "steps": ["fuse the ops"], "rationale": "fewer passes"}


def plan_reply(plan: object = PLAN, code: str = ANCHORED) -> str:
    body = plan if isinstance(plan, str) else json.dumps(plan)
    return f"Here is my plan.\n```json\n{body}\n```\nAnd the code:\n```python\n{code}```\n"


def test_code_reply_last_block_defining_modelnew_wins() -> None:
    text = (
        "```python\nimport torch\n```\n"
        "```python\nclass ModelNew:\n    first = 1\n```\n"
        "```py\nclass ModelNew:\n    second = 2\n```\n"
        "```python\nprint('helper')\n```\n"
    )
    assert "second = 2" in parse_code_reply(text).code


def test_code_reply_untagged_fence_and_think_block() -> None:
    text = "<think>```python\nclass ModelNew: bad = 1\n```</think>\n```\nclass ModelNew:\n    ok = 1\n```"
    assert "ok = 1" in parse_code_reply(text).code


def test_code_reply_syntax_error_still_accepted_for_the_benchmarker() -> None:
    code = parse_code_reply("```python\nclass ModelNew(nn.Module:\n    pass\n```").code
    assert "ModelNew" in code


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no code at all", "no fenced ```python code block"),
        ("```python\nclass Model:\n    pass\n```", "does not define a top-level class ModelNew"),
        ("```python\nclass ModelNew:\n    pass\n", "truncated"),
        ("```python\nimport torch\n", "truncated"),
    ],
)
def test_code_reply_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_code_reply(text)


def test_plan_reply_ok() -> None:
    parsed = parse_plan_reply(plan_reply(), PARENT)
    assert parsed.plan["title"] == "fuse"
    assert ANCHOR_BEGIN in parsed.anchored_code
    assert parsed.warnings == []
    assert strip_anchors(parsed.anchored_code).split() == PARENT.split()


def test_plan_reply_warns_when_code_outside_anchors_changed() -> None:
    parsed = parse_plan_reply(
        plan_reply(code=ANCHORED.replace("import torch", "import os")), PARENT
    )
    assert parsed.warnings


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```python\nx\n```", "no fenced ```json block"),
        (plan_reply('{"title": "x", "steps": ["a"], "rationale": "r"'), "plan JSON is truncated"),
        (plan_reply('{"title": "x" "steps": []}'), "not valid JSON"),
        ('```json\n{"title": "x", "steps": ["a"]', "plan JSON is truncated"),
        (plan_reply({"title": "", "steps": [], "rationale": 1}), '"title" must be'),
        (plan_reply({"title": "t", "steps": "one", "rationale": "r"}), '"steps" must be'),
        (plan_reply([1, 2]), "must be an object"),
        (plan_reply(code=PARENT), "no `# <<<IMPROVE BEGINS>>>`"),
        (plan_reply(code=ANCHORED.replace(ANCHOR_END, "")), "never closed"),
        (plan_reply(code=ANCHORED.replace(ANCHOR_BEGIN, "")), "without a preceding"),
        (f"```json\n{json.dumps(PLAN)}\n```\n", "no fenced ```python block with the anchored"),
    ],
)
def test_plan_reply_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message.replace("(", r"\(").replace("*", r"\*")):
        parse_plan_reply(text, PARENT)
