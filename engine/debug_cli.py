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

from engine.cli import UsageError
from engine.reference import ReferenceError_, check_reference_source, read_reference


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "debug", help="fix a failing kernel with the debug agent", description=__doc__
    )
    parser.add_argument("kernel", help="candidate .py file that defines ModelNew")
    parser.add_argument("--reference", required=True, help="reference .py file (Model)")
    parser.add_argument("--agent", choices=("auto", "offline", "openai"), default="auto")
    parser.add_argument("--model")
    parser.add_argument("--base-url")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None, help="benchmark limit per phase")
    parser.add_argument("--llm-timeout", type=float, default=None)
    parser.add_argument(
        "--timing-budget", type=float, default=None, help="adaptive timing seconds per side"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine import context as ctx
    from engine import prompts
    from engine.agents.base import AgentError, AgentRequest, Role
    from engine.bench import Benchmarker, EvalConfig
    from engine.optimize_cli import make_agent_setup
    from engine.parsing import ParseError, parse_code_reply
    from engine.search import analyze_failure, repair_request
    from engine.tree import StarkNode

    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, not {args.timeout}")
    ref_path = Path(args.reference)
    kernel_path = Path(args.kernel)
    try:
        reference = read_reference(ref_path)
        check_reference_source(reference, str(ref_path))
        kernel = read_reference(kernel_path)
    except ReferenceError_ as exc:
        raise UsageError(str(exc).replace("reference", "file", 1)) from None

    eval_kwargs: dict[str, Any] = {"device": args.device}
    if args.timeout is not None:
        eval_kwargs.update(compile_timeout_s=args.timeout, run_timeout_s=args.timeout)
    if args.timing_budget is not None:
        if args.timing_budget <= 0:
            raise UsageError(f"--timing-budget must be positive, not {args.timing_budget}")
        eval_kwargs["timing_budget_s"] = args.timing_budget
    config = EvalConfig(**eval_kwargs)
    # Settings errors are usage errors, found before any benchmarking; an unreachable endpoint
    # surfaces as the agent's error in the JSON report (no preflight: the agent may not be needed).
    setup = make_agent_setup(
        args.agent,
        args.seed,
        model=args.model,
        base_url=args.base_url,
        llm_timeout=args.llm_timeout,
        preflight=False,
    )
    report: dict[str, Any] = {"original": None, "fixed_code": None, "fixed": None, "error": None}
    with Benchmarker() as benchmarker:
        original = benchmarker.evaluate(reference, kernel, config)
        report["original"] = original.to_dict()
        if original.stage == "harness":
            report["error"] = f"benchmarker failed: {original.error}"
        elif not original.runnable:
            node = StarkNode(node_id=0, parent_id=None, code=kernel, phase="debug")
            node.metrics = original
            node.logs = original.log
            node.error = original.error
            tail = ctx.error_tail(node)
            target = prompts.detect_target(args.device)
            request = AgentRequest(
                role=Role.DEBUG,
                prompt=prompts.build_debug_prompt(
                    reference,
                    target,
                    f"{kernel_path.name}: FAILED: {original.error}",
                    kernel,
                    tail,
                    analyze_failure(node),
                    "(none given)",
                    "(no search history: a one-shot debug)",
                ),
                round=0,
                reference_src=reference,
                device=target.device,
                parent_code=kernel,
                error_log=tail,
            )
            try:
                reply = setup.agent.complete(request)
                try:
                    fixed_code = parse_code_reply(reply.text).code
                except ParseError as exc:
                    repair = repair_request(request, reply.text, exc)
                    fixed_code = parse_code_reply(setup.agent.complete(repair).text).code
            except (AgentError, ParseError) as exc:
                report["error"] = f"debug agent: {exc}"
            else:
                report["fixed_code"] = fixed_code
                report["fixed"] = benchmarker.evaluate(reference, fixed_code, config).to_dict()
    ok = bool((report["fixed"] or report["original"] or {}).get("correct")) and bool(
        (report["fixed"] or report["original"] or {}).get("compiled")
    )
    if args.json:
        print(json.dumps(report, default=str))
    else:
        _print_human(report, kernel_path)
    return 0 if ok else 1


def _print_human(report: dict[str, Any], kernel_path: Path) -> None:
    from engine.bench.result import EvalResult

    original = EvalResult.from_dict(report["original"])
    print(f"{kernel_path}: {original.summary()}")
    if report["error"]:
        print(f"error: {report['error']}", file=sys.stderr)
    if report["fixed"] is not None:
        fixed = EvalResult.from_dict(report["fixed"])
        print(f"proposed fix: {fixed.summary()}")
        print("--- fixed code ---")
        print(report["fixed_code"])
