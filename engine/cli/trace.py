"""`stark trace TASK_DIR`: the timeline of a task's trace (time, step, action,
node, verdict, speedup), as a rich table on a terminal, aligned plain text
otherwise, or JSON with `--json` (for the language server and scripts)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli.common import UsageError
from engine.trace.timeline import TimelineRow, load_timeline, summarize

_COLUMNS = ("time", "step", "round", "action", "node", "verdict", "speedup", "detail")
_DETAIL_CHARS = 80


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="show the timeline of a task's trace",
        description="Print the recorded steps of a task: time, step, action, node, verdict, "
        "speedup. TASK_DIR is a task directory (with trace/), a trace directory or one op "
        "directory inside it.",
    )
    parser.add_argument("task_dir", metavar="TASK_DIR", help="task directory of a search")
    parser.add_argument("--json", action="store_true", help="print the timeline as JSON")
    parser.add_argument("--op", help="only this op (when the trace holds several)")
    parser.add_argument(
        "--no-conductor",
        action="store_true",
        help="hide conductor records (checks, error analyses, node selections)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.task_dir).expanduser()
    if not path.exists():
        raise UsageError(f"{path}: no such directory")
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory")
    try:
        root, rows = load_timeline(path)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read the trace in {path}: {exc}") from None
    if args.op:
        ops = sorted({row.op for row in rows})
        if args.op not in ops:
            raise UsageError(f"no op {args.op!r} in this trace; ops: {', '.join(ops) or 'none'}")
        rows = [row for row in rows if row.op == args.op]
    if args.no_conductor:
        rows = [row for row in rows if row.kind == "action"]
    summary = summarize(rows)
    try:
        _print(args, root, rows, summary)
    except BrokenPipeError:  # `stark trace DIR | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print(
    args: argparse.Namespace, root: Path, rows: list[TimelineRow], summary: dict[str, Any]
) -> None:
    if args.json:
        payload = {"trace_dir": str(root), "summary": summary, "rows": [r.to_dict() for r in rows]}
        print(json.dumps(payload, indent=2))
        return
    show_op = len({row.op for row in rows}) > 1
    show_task = len({row.task_id for row in rows}) > 1
    days = {time.strftime("%Y-%m-%d", time.localtime(row.ts)) for row in rows if row.ts}
    time_format = "%H:%M:%S" if len(days) <= 1 else "%m-%d %H:%M:%S"
    cells = [_cells(row, show_op, show_task, time_format) for row in rows]
    header = [*(["op"] if show_op else []), *(["task"] if show_task else []), *_COLUMNS]
    title = f"trace: {root}" + (f" ({days.pop()})" if len(days) == 1 else "")
    if sys.stdout.isatty():
        _print_rich(title, header, cells, rows, summary)
    else:
        _print_plain(title, header, cells, summary)


def _cells(row: TimelineRow, show_op: bool, show_task: bool, time_format: str) -> list[str]:
    detail = row.detail or ""
    if row.mode and row.mode not in detail:
        detail = f"{row.mode}: {detail}" if detail else row.mode
    if len(detail) > _DETAIL_CHARS:
        detail = detail[: _DETAIL_CHARS - 3] + "..."
    speedup = f"{row.speedup:.2f}x" if isinstance(row.speedup, int | float) else ""
    action = row.action if row.kind == "action" else f"  {row.action}"
    return [
        *([row.op] if show_op else []),
        *([row.task_id] if show_task else []),
        time.strftime(time_format, time.localtime(row.ts)) if row.ts else "-",
        f"S{row.step:02d}",
        "" if row.round is None else str(row.round),
        action,
        "" if row.node_id is None else str(row.node_id),
        row.verdict or "",
        speedup,
        detail,
    ]


def _summary_line(summary: dict[str, Any]) -> str:
    line = (
        f"{summary['steps']} steps: {summary['llm_calls']} LLM calls, "
        f"{summary['verifications']} verifications ({summary['correct']} correct)"
    )
    if summary["best_speedup"] is not None:
        node = f", node {summary['best_node']}" if summary["best_node"] is not None else ""
        line += f"; best {summary['best_speedup']:.2f}x at step {summary['best_step']}{node}"
    return line


def _print_plain(
    title: str, header: list[str], cells: list[list[str]], summary: dict[str, Any]
) -> None:
    print(title)
    table = [[h.upper() for h in header], *cells]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    print(_summary_line(summary))


_VERDICT_STYLE = {
    "correct": "green",
    "incorrect": "red",
    "compile error": "red",
    "unknown": "yellow",
}


def _print_rich(
    title: str,
    header: list[str],
    cells: list[list[str]],
    rows: list[TimelineRow],
    summary: dict[str, Any],
) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(
        title=escape(title),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),
        collapse_padding=True,
    )
    widths = [max([len(name), *(len(line[i]) for line in cells)]) for i, name in enumerate(header)]
    fixed = sum(w for w, name in zip(widths, header, strict=True) if name != "detail")
    # The detail column alone gives way on a narrow terminal (one separator per column).
    detail_width = max(8, console.width - fixed - len(header) + 1)
    for width, name in zip(widths, header, strict=True):
        if name == "detail":
            table.add_column(name, overflow="ellipsis", no_wrap=True, max_width=detail_width)
        else:
            right = name in ("step", "node", "speedup")
            table.add_column(name, justify="right" if right else "left", width=width, no_wrap=True)
    verdict_col = header.index("verdict")
    for row, line in zip(rows, cells, strict=True):
        styled = [escape(cell) for cell in line]  # errors may contain "[...]"
        color = _VERDICT_STYLE.get(row.verdict or "")
        if color:
            styled[verdict_col] = f"[{color}]{styled[verdict_col]}[/]"
        table.add_row(*styled, style="dim" if row.kind != "action" else None)
    console.print(table)
    console.print(_summary_line(summary), markup=False)
