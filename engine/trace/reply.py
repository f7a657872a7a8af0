"""Turn a raw model reply into the trace's `result.txt`: the code and plan JSON it
contains, with the prose around them kept as `#` comments.

A reader of the trace wants the kernel, not the chat; but the model's remarks
around the code often say why it looks the way it does, so they stay, as
comments. A reply with nothing recognisable is kept verbatim by the caller.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Literal

SegmentKind = Literal["prose", "code", "plan"]

_FENCE_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[^\s`]*)[^`\n]*$")
_THINK = re.compile(r"<think>(?P<body>.*?)(?:</think>|\Z)", re.S | re.I)
_CODE_STATEMENTS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)


@dataclass(slots=True)
class Segment:
    kind: SegmentKind
    text: str
    lang: str = ""
    unterminated: bool = False


@dataclass(slots=True)
class ParsedReply:
    segments: list[Segment]
    reasoning: str  # text of <think> blocks found inside the reply

    @property
    def has_content(self) -> bool:
        return any(segment.kind != "prose" for segment in self.segments)


def split_think(reply: str) -> tuple[str, str]:
    """Separate `<think>...</think>` reasoning (some models inline it) from the answer."""
    thoughts = [m["body"].strip() for m in _THINK.finditer(reply)]
    return _THINK.sub("", reply), "\n\n".join(t for t in thoughts if t)


def _as_plan(text: str) -> str | None:
    """Pretty JSON if `text` is a JSON object or array, else None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def _fenced_segments(text: str) -> list[Segment]:
    segments: list[Segment] = []
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        if not opened:
            prose.append(lines[i])
            i += 1
            continue
        fence, lang = opened["fence"], opened["lang"].lower()
        body: list[str] = []
        i += 1
        closed = False
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                closed = True
                i += 1
                break
            body.append(lines[i])
            i += 1
        if prose:
            segments.append(Segment("prose", "\n".join(prose)))
            prose = []
        code = "\n".join(body)
        plan = _as_plan(code) if lang in ("", "json", "jsonc") else None
        if plan is not None:
            segments.append(Segment("plan", plan, "json", unterminated=not closed))
        else:
            segments.append(Segment("code", code, lang, unterminated=not closed))
    if prose:
        segments.append(Segment("prose", "\n".join(prose)))
    return segments


def _embedded_plan(text: str) -> list[Segment] | None:
    """A JSON object inside prose (`Plan: {...} Done.`), split into three segments."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", text):
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if not value or not isinstance(value, dict | list):
            continue
        pretty = json.dumps(value, indent=2, ensure_ascii=False)
        parts = [
            Segment("prose", text[: match.start()]),
            Segment("plan", pretty, "json"),
            Segment("prose", text[end:]),
        ]
        return [p for p in parts if p.kind != "prose" or p.text.strip()]
    return None


def _is_bare_code(text: str) -> bool:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, _CODE_STATEMENTS) for node in tree.body)


def parse_reply(reply: str) -> ParsedReply:
    answer, reasoning = split_think(reply)
    segments = _fenced_segments(answer)
    if not any(s.kind != "prose" for s in segments):
        plan = _as_plan(answer)
        if plan is not None:
            segments = [Segment("plan", plan, "json")]
        elif _is_bare_code(answer):
            segments = [Segment("code", answer.strip("\n"), "python")]
        else:
            segments = _embedded_plan(answer) or segments
    return ParsedReply(segments=segments, reasoning=reasoning)


def _comment(text: str) -> str:
    lines = text.strip("\n").splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(f"# {line}".rstrip() for line in lines)


def render_result(reply: str) -> str:
    """The text of `result.txt`: code and plan verbatim, prose as comments.

    Falls back to the raw reply when it contains neither code nor a plan.
    """
    parsed = parse_reply(reply)
    if not parsed.has_content:
        return reply
    blocks: list[str] = []
    for segment in parsed.segments:
        if segment.kind == "prose":
            if segment.text.strip():
                blocks.append(_comment(segment.text))
            continue
        label = "plan JSON" if segment.kind == "plan" else f"code ({segment.lang or 'text'})"
        note = " [unterminated: the reply was cut off here]" if segment.unterminated else ""
        blocks.append(f"# --- {label}{note} ---\n{segment.text.strip(chr(10))}")
    return "\n\n".join(blocks) + "\n"
