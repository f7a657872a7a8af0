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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.bench.result import EvalResult
from engine.cli import UsageError
from engine.reference import ReferenceError_, check_reference_source, read_reference


@dataclass(slots=True)
class DebugReport:
    """What `stark debug` found: the original verdict, the proposed fix and its verdict.
    `to_dict()` is the `--json` shape the language server parses (keys must not change)."""

    original: EvalResult | None = None
    fixed_code: str | None = None
    fixed: EvalResult | None = None
    error: str | None = None

    @property
    def final(self) -> EvalResult | None:
        """The verdict that counts: the fix's when there is one, else the original's."""
        return self.fixed or self.original

    @property
    def ok(self) -> bool:
        return self.final is not None and self.final.runnable

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original.to_dict() if self.original else None,
            "fixed_code": self.fixed_code,
            "fixed": self.fixed.to_dict() if self.fixed else None,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DebugReport:
        original, fixed = data.get("original"), data.get("fixed")
        return cls(
            original=EvalResult.from_dict(original) if original else None,
            fixed_code=data.get("fixed_code"),
            fixed=EvalResult.from_dict(fixed) if fixed else None,
            error=data.get("error"),
        )


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
    report = DebugReport()
    with Benchmarker() as benchmarker:
        original = benchmarker.evaluate(reference, kernel, config)
        report.original = original
        if original.stage == "harness":
            report.error = f"benchmarker failed: {original.error}"
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
