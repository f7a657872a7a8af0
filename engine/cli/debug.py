"""`stark debug KERNEL --reference REF`: benchmark a kernel; if it fails, ask the debug
agent once (with the tail of its error log), benchmark the fix, and report.

`--json` prints {"original": EvalResult, "fixed_code": str|null, "fixed": EvalResult|null,
"error": str|null}; the language server turns `fixed_code` into an edit. Exit status:
0 when the original or the fixed kernel is correct, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.artifacts.debug_report import DebugReport
from engine.cli.common import (
    UsageError,
    add_agent_arguments,
    agent_setup_from_args,
    eval_config_from_args,
    validate_eval_args,
)
from engine.search.reference import ReferenceError_, check_reference_source, read_reference


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "debug", help="fix a failing kernel with the debug agent", description=__doc__
    )
    parser.add_argument("kernel", help="candidate .py file that defines ModelNew")
    parser.add_argument("--reference", required=True, help="reference .py file (Model)")
    add_agent_arguments(parser)
    parser.add_argument("--timeout", type=float, default=None, help="benchmark limit per phase")
    parser.add_argument("--llm-timeout", type=float, default=None)
    parser.add_argument(
        "--timing-budget", type=float, default=None, help="adaptive timing seconds per side"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.agents import prompts
    from engine.agents.base import AgentError
    from engine.bench import Benchmarker
    from engine.search import context as ctx
    from engine.search.calls import repair_request
    from engine.search.diagnosis import analyze_failure
    from engine.search.expansions import debug_request, new_node
    from engine.search.parsing import ParseError, parse_code_reply

    validate_eval_args(args)
    ref_path = Path(args.reference)
    kernel_path = Path(args.kernel)
    try:
        reference = read_reference(ref_path)
        check_reference_source(reference, str(ref_path))
        kernel = read_reference(kernel_path)
    except ReferenceError_ as exc:
        raise UsageError(str(exc).replace("reference", "file", 1)) from None

    config = eval_config_from_args(args)
    # Settings errors are usage errors, found before any benchmarking; an unreachable endpoint
    # surfaces as the agent's error in the JSON report (no preflight: the agent may not be needed).
    setup = agent_setup_from_args(args, preflight=False)
    report = DebugReport()
    with Benchmarker() as benchmarker:
        original = benchmarker.evaluate(reference, kernel, config)
        report.original = original
        if original.stage == "harness":
            report.error = f"benchmarker failed: {original.error}"
        elif not original.runnable:
            node = new_node(0, None, "debug", 0, code=kernel)
            node.metrics = original
            node.logs = original.log
            node.error = original.error
            tail = ctx.error_tail(node)
            request = debug_request(
                reference_src=reference,
                target=prompts.detect_target(args.device),
                header=f"{kernel_path.name}: FAILED: {original.error}",
                code=kernel,
                error_log=tail,
                analysis=analyze_failure(node),
                round_=0,
                plan_hint="(none given)",
                history_text="(no search history: a one-shot debug)",
            )
            try:
                reply = setup.agent.complete(request)
                if reply.refusal:  # declined with a reason: nothing to parse or benchmark
                    raise AgentError(f"could not fix: {reply.refusal}")
                try:
                    fixed_code = parse_code_reply(reply.text).code
                except ParseError as exc:
                    repair = repair_request(request, reply.text, exc)
                    fixed_code = parse_code_reply(setup.agent.complete(repair).text).code
            except (AgentError, ParseError) as exc:
                report.error = f"debug agent: {exc}"
            else:
                report.fixed_code = fixed_code
                report.fixed = benchmarker.evaluate(reference, fixed_code, config)
    if args.json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        _print_human(report, kernel_path)
    return 0 if report.ok else 1


def _print_human(report: DebugReport, kernel_path: Path) -> None:
    if report.original is not None:
        print(f"{kernel_path}: {report.original.summary()}")
    if report.error:
        print(f"error: {report.error}", file=sys.stderr)
    if report.fixed is not None:
        print(f"proposed fix: {report.fixed.summary()}")
        print("--- fixed code ---")
        print(report.fixed_code)
