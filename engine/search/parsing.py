"""Turn agent replies into a plan or a kernel, or say precisely what is wrong.

There is one reply format for every agent (see the prompt templates):
- plan replies: a fenced ```json block with the plan object and a fenced ```python
  block with the *anchored code* (the parent's code with `# <<<IMPROVE BEGINS>>>` /
  `# <<<IMPROVE ENDS>>>` comment lines around the spans to change);
- seed/code/debug replies: a fenced ```python block with a complete module that
  defines `ModelNew` (with several, the last one that defines `ModelNew` wins).

A `ParseError` message is shown to the model in the repair prompt and recorded on
the buggy node, so it names the exact problem.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

ANCHOR_BEGIN = "# <<<IMPROVE BEGINS>>>"
ANCHOR_END = "# <<<IMPROVE ENDS>>>"
_BEGIN_RE = re.compile(r"^[ \t]*#[ \t]*<<<IMPROVE BEGINS>>>[ \t]*$", re.MULTILINE)
_END_RE = re.compile(r"^[ \t]*#[ \t]*<<<IMPROVE ENDS>>>[ \t]*$", re.MULTILINE)
# An opening fence: ``` or ~~~ (3+), optional language tag, end of line.
_FENCE_OPEN_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+.-]*)[^\n]*$", re.MULTILINE)
_THINK_RE = re.compile(r"<think>(.*?)(</think>|\Z)", re.DOTALL | re.IGNORECASE)
_MODELNEW_RE = re.compile(r"^\s*(class\s+ModelNew\b|ModelNew\s*=)", re.MULTILINE)

PYTHON_TAGS = {"python", "py", "python3"}
JSON_TAGS = {"json", "jsonc"}


class ParseError(ValueError):
    """A malformed reply; the message goes verbatim into the repair prompt."""


@dataclass(slots=True)
class CodeBlock:
    lang: str  # lower-cased tag, "" when untagged
    body: str
    closed: bool  # False when the reply ended inside the block (truncated output)


@dataclass(slots=True)
class PlanReply:
    plan: dict[str, Any]
    plan_json: str  # canonical (indented) JSON text of `plan`
    anchored_code: str
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CodeReply:
    code: str
    warnings: list[str] = field(default_factory=list)


def split_reasoning(text: str) -> tuple[str, str]:
    """Separate inline `<think>...</think>` reasoning (some open models emit it in the
    content) from the answer; returns (answer, reasoning)."""
    thoughts = [m.group(1).strip() for m in _THINK_RE.finditer(text)]
    return _THINK_RE.sub("", text), "\n\n".join(t for t in thoughts if t)


def extract_blocks(text: str) -> list[CodeBlock]:
    """All fenced blocks in order; an unclosed last block is kept and marked."""
    blocks: list[CodeBlock] = []
    pos = 0
    while True:
        match = _FENCE_OPEN_RE.search(text, pos)
        if match is None:
            return blocks
        fence, lang = match.group(1), match.group(2).lower()
        body_start = match.end() + 1
        close_re = re.compile(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE
        )
        close = close_re.search(text, body_start)
        if close is None:
            blocks.append(CodeBlock(lang, text[body_start:], closed=False))
            return blocks
        blocks.append(CodeBlock(lang, text[body_start : close.start()], closed=True))
        pos = close.end()


def defines_model_new(code: str) -> bool:
    """True if the module defines `ModelNew` at top level (by AST; by regex when the
    code does not parse, so a syntax error reaches the benchmarker's precise report)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return bool(_MODELNEW_RE.search(code))
    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef) and stmt.name == "ModelNew":
            return True
        if isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "ModelNew" for t in targets):
                return True
        if isinstance(stmt, ast.ImportFrom | ast.Import) and any(
            (a.asname or a.name) == "ModelNew" for a in stmt.names
        ):
            return True
    return False


def _python_blocks(blocks: list[CodeBlock]) -> list[CodeBlock]:
    tagged = [b for b in blocks if b.lang in PYTHON_TAGS]
    return tagged or [b for b in blocks if b.lang == ""]


def parse_code_reply(text: str) -> CodeReply:
    """The kernel module of a seed/code/debug reply."""
    answer, _ = split_reasoning(text)
    blocks = _python_blocks(extract_blocks(answer))
    if not blocks:
        raise ParseError("no fenced ```python code block in the reply")
    with_model = [b for b in blocks if defines_model_new(b.body)]
    if not with_model:
        last = blocks[-1]
        if not last.closed:
            raise ParseError(
                "the ```python block is truncated (the reply ended before its closing "
                "fence) and does not define ModelNew"
            )
        raise ParseError("the ```python block does not define a top-level class ModelNew")
    chosen = with_model[-1]
    if not chosen.closed:
        raise ParseError(
            "the ```python block is truncated: the reply ended before its closing fence"
        )
    code = chosen.body.strip("\n") + "\n"
    warnings = []
    if _BEGIN_RE.search(code) or _END_RE.search(code):
        warnings.append("the kernel still contains IMPROVE anchor comments")
    return CodeReply(code=code, warnings=warnings)


def _validate_plan(plan: Any) -> dict[str, Any]:
    if not isinstance(plan, dict):
        raise ParseError(f"the plan JSON must be an object, not {type(plan).__name__}")
    problems = []
    if not isinstance(plan.get("title"), str) or not plan["title"].strip():
        problems.append('"title" must be a non-empty string')
    steps = plan.get("steps")
    if (
        not isinstance(steps, list)
        or not steps
        or not all(isinstance(s, str) and s.strip() for s in steps)
    ):
        problems.append('"steps" must be a non-empty list of strings')
    if "transformations" in plan and not (
        isinstance(plan["transformations"], list)
        and all(isinstance(t, str) for t in plan["transformations"])
    ):
        problems.append('"transformations" must be a list of strings')
    if not isinstance(plan.get("rationale"), str):
        problems.append('"rationale" must be a string')
    if problems:
        raise ParseError("invalid plan JSON: " + "; ".join(problems))
    return plan


def check_anchors(anchored_code: str) -> int:
    """Number of anchored spans; raises ParseError unless BEGIN/END lines pair up in order."""
    marks = sorted(
        [(m.start(), "begin") for m in _BEGIN_RE.finditer(anchored_code)]
        + [(m.start(), "end") for m in _END_RE.finditer(anchored_code)]
    )
    if not marks:
        raise ParseError(
            f"the anchored code has no `{ANCHOR_BEGIN}` / `{ANCHOR_END}` comment lines "
            "around the spans to change"
        )
    depth = spans = 0
    for _, kind in marks:
        if kind == "begin":
            if depth:
                raise ParseError(f"nested `{ANCHOR_BEGIN}` before the previous span was closed")
            depth = 1
        else:
            if not depth:
                raise ParseError(f"`{ANCHOR_END}` without a preceding `{ANCHOR_BEGIN}`")
            depth = 0
            spans += 1
    if depth:
        raise ParseError(f"`{ANCHOR_BEGIN}` is never closed by `{ANCHOR_END}`")
    return spans


def strip_anchors(code: str) -> str:
    return _END_RE.sub("", _BEGIN_RE.sub("", code)).replace("\n\n\n", "\n\n")


def parse_plan_reply(text: str, parent_code: str | None = None) -> PlanReply:
    """The plan and anchored code of a plan reply."""
    answer, _ = split_reasoning(text)
    blocks = extract_blocks(answer)
    json_blocks = [b for b in blocks if b.lang in JSON_TAGS]
    if not json_blocks:
        # Some models put the plan in an untagged fence: accept one that parses as an object.
        json_blocks = [b for b in blocks if b.lang == "" and b.body.lstrip().startswith("{")]
    if not json_blocks:
        raise ParseError("no fenced ```json block with the plan object in the reply")
    block = json_blocks[0]
    if not block.closed:
        raise ParseError("the plan JSON is truncated: the reply ended inside the ```json block")
    try:
        plan = json.loads(block.body)
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(block.body.rstrip()) - 1
        what = "truncated" if truncated else "not valid JSON"
        raise ParseError(
            f"the plan JSON is {what}: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    plan = _validate_plan(plan)
    code_blocks = [b for b in _python_blocks(blocks) if b is not block]
    if not code_blocks:
        raise ParseError("no fenced ```python block with the anchored code in the reply")
    anchored = next((b for b in reversed(code_blocks) if _BEGIN_RE.search(b.body)), code_blocks[-1])
    if not anchored.closed:
        raise ParseError(
            "the anchored code is truncated: the reply ended inside the ```python block"
        )
    anchored_code = anchored.body.strip("\n") + "\n"
    check_anchors(anchored_code)
    warnings = []
    if parent_code is not None and _normalise(strip_anchors(anchored_code)) != _normalise(
        parent_code
    ):
        warnings.append("the anchored code differs from the parent's code outside the anchors")
    return PlanReply(
        plan=plan,
        plan_json=json.dumps(plan, indent=2, ensure_ascii=False),
        anchored_code=anchored_code,
        warnings=warnings,
    )


def _normalise(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())
