"""The offline agent says what it is (issue 11 item 5) and learns from its tree (issue 16
item 4): no invented tokens, no staged failures, no reference passed off as a fix of a
kernel it did not write, an explicit reason when `--agent auto` falls back, and no move
proposed again after it failed for a permanent reason."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.agents import offline
from engine.agents.base import AgentReply, AgentRequest, HistoryItem, Role
from engine.agents.factory import NO_ENDPOINT_REASON, choose_agent, make_agent
from engine.agents.failures import FailureRecord, classify, records_from_meta
from engine.agents.kernel_fixes import EDIT_NOTE, fix_foreign_kernel
from engine.agents.offline import OfflineAgent
from engine.agents.offline_plan import Candidate, Evidence, parse_plan_title
from engine.agents.settings import AgentSettings
from engine.agents.transforms import (
    CATALOGUE,
    analyse_reference,
    header_transforms,
    read_header,
)
from engine.bench import Benchmarker, EvalConfig
from engine.bench.result import EvalResult
from engine.search import context as ctx
from engine.search.tree import StarkNode, StarkTree

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.py"))

TINY = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2.0


def get_inputs():
    return [torch.randn(64, 32)]


def get_init_inputs():
    return []
"""


def _request(role: Role, source: str = TINY, **fields: object) -> AgentRequest:
    values: dict[str, object] = {"prompt": "", "round": 1, "reference_src": source}
    values.update(fields)
    return AgentRequest(role=role, **values)  # type: ignore[arg-type]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def _code(reply: AgentReply) -> str:
    (block,) = _blocks(reply.text, "python")
    return block


def _plan(agent: OfflineAgent, **fields: object) -> dict:
    reply = agent.complete(_request(Role.PLAN, **fields))
    return json.loads(_blocks(reply.text, "json")[0])


# --- what it is -------------------------------------------------------------------------


def test_replies_count_no_tokens_no_cost_and_say_agent() -> None:
    agent = OfflineAgent(0)
    seed = agent.complete(_request(Role.SEED, round=0))
    plan = agent.complete(_request(Role.PLAN, parent_code=_code(seed)))
    plan_dict = json.loads(_blocks(plan.text, "json")[0])
    code = agent.complete(_request(Role.CODE, parent_code=_code(seed), plan=plan_dict))
    debug = agent.complete(
        _request(Role.DEBUG, parent_code=_code(code), error_log="error: RuntimeError: boom")
    )
    for reply in (seed, plan, code, debug):
        assert reply.kind == "agent" and agent.reply_kind == "agent"
        assert reply.prompt_tokens is None and reply.completion_tokens is None
        assert reply.cost_usd == 0.0


def test_reply_kind_is_checked() -> None:
    assert AgentReply(text="x").kind == "llm"
    with pytest.raises(ValueError, match="unknown reply kind"):
        AgentReply(text="x", kind="robot")  # type: ignore[arg-type]


def test_auto_fallback_gives_its_reason(tmp_path: Path) -> None:
    empty = AgentSettings.from_env(env={}, search_dir=tmp_path)
    choice = choose_agent("auto", empty, seed=3)
    assert choice.kind == "offline" and isinstance(choice.agent, OfflineAgent)
    assert choice.fallback_reason == NO_ENDPOINT_REASON
    assert "STARK_BASE_URL" in NO_ENDPOINT_REASON and "--base-url" in NO_ENDPOINT_REASON
    assert choose_agent("offline", empty).fallback_reason is None  # asked for: no fallback
    configured = AgentSettings.from_env(
        env={"STARK_BASE_URL": "http://127.0.0.1:9/v1"}, search_dir=tmp_path
    )
    chosen = choose_agent("auto", configured)
    assert chosen.kind == "openai" and chosen.fallback_reason is None
    assert isinstance(make_agent("auto", empty), OfflineAgent)


# --- no staged failure --------------------------------------------------------------------


def test_the_staged_precision_round_is_gone() -> None:
    assert not hasattr(offline, "RISK_WINDOW") and not hasattr(offline, "_risk_appeal")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_no_risky_move_while_safe_ones_are_untried(example: Path) -> None:
    """Early rounds (where the old agent forced fp16/bf16 to stage a buggy node) propose
    only transformations that keep float32 numerics."""
    source = example.read_text()
    for seed in range(8):
        agent = OfflineAgent(seed)
        seed_code = _code(agent.complete(_request(Role.SEED, source, round=0)))
        for round_ in range(1, 4):
            plan = _plan(agent, reference_src=source, round=round_, parent_code=seed_code)
            risky = [t for t in plan["transformations"] if CATALOGUE[t].risky]
            assert risky == [], (seed, round_, plan["title"])


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Benchmarker]:
    with Benchmarker(cache_dir=tmp_path_factory.mktemp("cache")) as benchmarker:
        benchmarker.warm_up()
        yield benchmarker


QUICK = EvalConfig(
    device="cpu",
    correctness_trials=2,
    timing_trials=3,
    warmup_s=0.01,
    timing_budget_s=0.5,
    compile_timeout_s=120.0,
    run_timeout_s=30.0,
    num_threads=1,
)


@pytest.mark.slow
def test_safe_outputs_pass_the_real_benchmarker_on_every_example(bench: Benchmarker) -> None:
    """The seed and the inference_mode variant of each example are correct by construction:
    through the real benchmarker none of them fails."""
    for example in EXAMPLES:
        source = example.read_text()
        agent = OfflineAgent(0)
        seed_code = _code(agent.complete(_request(Role.SEED, source, round=0)))
        plan = {"title": "t", "steps": ["s"], "transformations": ["inference_mode"]}
        variant = _code(
            agent.complete(_request(Role.CODE, source, parent_code=seed_code, plan=plan))
        )
        for code in (seed_code, variant):
            result = bench.evaluate(source, code, QUICK)
            assert result.runnable, (example.name, result.error)


# --- debugging a kernel it did not write ----------------------------------------------------


def _error_log(code: str, result: EvalResult) -> str:
    node = StarkNode(node_id=0, parent_id=None, code=code, phase="debug", metrics=result)
    node.error, node.logs = result.error, result.log
    return ctx.error_tail(node)


FOREIGN = {
    # name: (reference forward, inputs, the user's kernel forward)
    "dtype": (
        "return torch.relu(x) * 2.0",
        "torch.randn(64, 32)",
        "return my_fused_relu_scale(x)",
    ),
    "view": (
        "return torch.relu(x.t()).flatten()",
        "torch.randn(64, 32)",
        "return torch.relu(x.t().view(-1))",
    ),
    "contiguous": (
        "return torch.relu(x) * 2.0",
        "torch.randn(32, 64).t()",
        "if not x.is_contiguous():\n"
        "            raise RuntimeError('my_kernel: expected contiguous input')\n"
        "        return torch.relu(x) * 2.0",
    ),
    "aliasing": ("return x[:, :16].clone()", "torch.randn(64, 32)", "return x[:, :16]"),
    "modified": (
        "return torch.relu(x) * 2.0",
        "torch.randn(64, 32)",
        "y = x.relu_()\n        return y * 2.0",
    ),
}


def _foreign_task(name: str) -> tuple[str, str]:
    ref_forward, inputs, kernel_forward = FOREIGN[name]
    reference = TINY.replace("return torch.relu(x) * 2.0", ref_forward).replace(
        "torch.randn(64, 32)", inputs
    )
    kernel = (
        "import torch\nimport torch.nn as nn\n\n\n"
        "def my_fused_relu_scale(x):\n"
        "    return torch.relu(x.double()) * 2.0  # the user's (buggy: float64) kernel\n\n\n"
        "class ModelNew(nn.Module):\n"
        "    def forward(self, x):\n"
        f"        {kernel_forward}\n"
    )
    return reference, kernel


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_debug_makes_a_real_edit_of_a_foreign_kernel(bench: Benchmarker, name: str) -> None:
    reference, kernel = _foreign_task(name)
    original = bench.evaluate(reference, kernel, QUICK)
    assert not original.runnable and original.stage != "harness", original.summary()
    reply = OfflineAgent(0).complete(
        _request(
            Role.DEBUG,
            reference,
            parent_code=kernel,
            error_log=_error_log(kernel, original),
        )
    )
    assert reply.refusal is None, reply.refusal
    fixed = _code(reply)
    assert fixed.startswith(EDIT_NOTE) and read_header(fixed) is None  # still the user's code
    assert "class Model(" not in fixed  # not the reference in disguise
    for line in kernel.replace(".view(", ".reshape(").splitlines():  # the user's lines stay
        assert line.replace("def forward(", "def _stark_unfixed_forward(") in fixed or (
            line.replace(".reshape(", ".view(") in fixed
        ), line
    result = bench.evaluate(reference, fixed, QUICK)
    assert result.runnable, (name, original.error, result.error)


def test_debug_refuses_what_it_cannot_fix_instead_of_returning_the_reference() -> None:
    kernel = (
        "import torch\nimport torch.nn as nn\n\n\n"
        "class ModelNew(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.relu(x) * 3.0\n"
    )
    log = "error: output 0: mismatch, max abs err 4.1 exceeds atol=0.0001 rtol=0.0001"
    reply = OfflineAgent(0).complete(_request(Role.DEBUG, parent_code=kernel, error_log=log))
    assert reply.refusal is not None and "numerics failure" in reply.refusal
    assert "did not write" in reply.refusal and "mismatch" in reply.refusal
    assert _blocks(reply.text, "python") == []  # nothing the search could benchmark
    assert reply.kind == "agent"


def test_an_edited_offline_kernel_counts_as_foreign() -> None:
    agent = OfflineAgent(0)
    seed = _code(agent.complete(_request(Role.SEED, round=0)))
    edited = seed.replace("super().__init__(*args, **kwargs)", "super().__init__()  # user")
    log = "error: forward raised ValueError: shape of the user's change"
    reply = agent.complete(_request(Role.DEBUG, parent_code=edited, error_log=log))
    assert reply.refusal is not None and "did not write" in reply.refusal


def test_a_failing_eager_seed_is_refused_not_re_emitted() -> None:
    agent = OfflineAgent(0)
    seed = _code(agent.complete(_request(Role.SEED, round=0)))
    log = "error: forward raised RuntimeError: out of memory"
    reply = agent.complete(_request(Role.DEBUG, parent_code=seed, error_log=log))
    assert reply.refusal is not None and "reference run eagerly" in reply.refusal


def test_one_edit_per_foreign_kernel() -> None:
    _, kernel = _foreign_task("aliasing")
    first = fix_foreign_kernel(kernel, "error: output 0 aliases an input (shares its memory)")
    assert first.code is not None
    again = fix_foreign_kernel(first.code, "error: candidate modified its inputs (input 0)")
    assert again.code is None and "earlier edit" in again.reason


# --- learning from the tree ----------------------------------------------------------------


def _node(tree: StarkTree, parent: int | None, code: str, phase: str, **facts: object) -> StarkNode:
    error = facts.get("error")
    metrics = (
        EvalResult(compiled=True, correct=False, error=str(error), stage="correctness")
        if error
        else EvalResult(compiled=True, correct=True, speedup=float(facts.get("speedup", 1.0)))
    )
    node = StarkNode(
        node_id=tree.new_id(),
        parent_id=parent,
        code=code,
        phase=phase,
        metrics=metrics,
        plan_json=facts.get("plan_json"),  # type: ignore[arg-type]
    )
    node.error = metrics.error
    return tree.add_node(node)


NAN = "output 0: NaN/Inf where the reference is finite"


def _tree_with_a_failed_fp16(source: str = TINY) -> tuple[StarkTree, StarkNode, StarkNode]:
    """P (seed) -> X = P + fp16 failed with NaN -> D = the debug fix of X (P's code again)."""
    agent = OfflineAgent(0)
    tree = StarkTree(root_limit=10)
    seed = _code(agent.complete(_request(Role.SEED, source, round=0)))
    parent = _node(tree, None, seed, "seed")
    plan = {
        "title": "add fp16 -> fp16",
        "steps": ["start from the parent (plain eager)", "add fp16"],
        "transformations": ["fp16"],
        "rationale": "r",
    }
    x_code = _code(agent.complete(_request(Role.CODE, source, parent_code=seed, plan=plan)))
    failed = _node(tree, parent.node_id, x_code, "optimize", error=NAN, plan_json=json.dumps(plan))
    log = ctx.error_tail(failed)
    d_code = _code(agent.complete(_request(Role.DEBUG, source, parent_code=x_code, error_log=log)))
    assert header_transforms(d_code) == []
    fixed = _node(tree, failed.node_id, d_code, "debug", plan_json=failed.plan_json)
    return tree, parent, fixed


def _plans_on(tree: StarkTree, node: StarkNode, source: str = TINY) -> Iterator[dict]:
    history = ctx.summaries_for_plan(tree, node)
    for seed in range(8):
        agent = OfflineAgent(seed)
        for round_ in range(1, 7):
            yield _plan(
                agent,
                reference_src=source,
                round=round_,
                parent_code=node.code,
                parent_plan=node.plan,
                history=history.items,
            )


def test_a_move_that_failed_is_not_proposed_again_on_the_fixed_parent() -> None:
    """D's code is P's: fp16 failed on it with NaN, so D's plans never add fp16 again,
    though X is not in D's plan history (the header of D remembers it)."""
    tree, _, fixed = _tree_with_a_failed_fp16()
    records = records_from_meta(read_header(fixed.code))
    assert [(r.transform, r.base, r.failure_class) for r in records] == [("fp16", (), "numerics")]
    for plan in _plans_on(tree, fixed):
        assert "fp16" not in plan["transformations"], plan["title"]


def test_a_move_that_failed_is_not_proposed_again_on_the_same_parent() -> None:
    tree, parent, _ = _tree_with_a_failed_fp16()
    for plan in _plans_on(tree, parent):
        assert plan["transformations"] != ["fp16"], plan["title"]


def test_failures_are_inherited_down_the_branch() -> None:
    tree, _, fixed = _tree_with_a_failed_fp16()
    plan = {"title": "t", "steps": ["s"], "transformations": ["inference_mode"]}
    child = _code(OfflineAgent(0).complete(_request(Role.CODE, parent_code=fixed.code, plan=plan)))
    assert [r.transform for r in records_from_meta(read_header(child))] == ["fp16"]


def test_which_recorded_failures_block_a_move() -> None:
    features = analyse_reference(TINY)

    def allowed(record: FailureRecord, transforms: list[str]) -> bool:
        evidence = Evidence.from_history([], "cpu", features, [record])
        return bool(evidence.allowed([Candidate(transforms, [], [])]))

    nan = FailureRecord("fp16", (), "numerics", NAN)
    assert not allowed(nan, ["fp16"])  # the same set: the same code fails the same way
    assert not allowed(nan, ["inference_mode", "fp16"])  # precision broke numerics: anywhere
    assert allowed(nan, ["bf16_autocast"])  # another precision: penalised, not ruled out
    layout = FailureRecord("channels_last", (), "layout", "view size is not compatible")
    assert not allowed(layout, ["channels_last"])
    assert allowed(layout, ["inference_mode", "channels_last"])  # the parent changed
    timed_out = FailureRecord("fp16", (), classify("error: correctness timed out after 20 s"), "")
    assert timed_out.failure_class == "timeout" and allowed(timed_out, ["fp16"])  # transient


def test_plan_summaries_of_offline_plans_are_read_back() -> None:
    assert parse_plan_title(
        "add compile:default (replacing compile:max-autotune-no-cudagraphs) -> "
        "inference_mode + compile:default: start from the parent; add x: y"
    ) == (
        ["inference_mode", "compile:default"],
        ["compile:default"],
        ["compile:max-autotune-no-cudagraphs"],
    )
    assert parse_plan_title("drop fp16 -> plain eager: steps") == ([], [], ["fp16"])
    assert parse_plan_title("fuse the loops: by hand") is None


def test_history_from_a_failed_sibling_blocks_its_set() -> None:
    item = HistoryItem(
        node_id=1,
        phase="optimize",
        runnable=False,
        speedup=None,
        plan_summary="add fp16 -> inference_mode + fp16: start from the parent",
        error=NAN,
    )
    evidence = Evidence.from_history([item], "cpu", analyse_reference(TINY))
    assert evidence.failed_sets == {frozenset({"inference_mode", "fp16"})}
    assert evidence.failures == {"fp16": 1}  # inference_mode (the parent's) is not blamed


def test_a_precision_change_that_broke_the_numerics_is_not_tried_on_another_branch() -> None:
    """fp16 gave NaN on P; C = P + compile:default is fast and its safe one-step moves are
    tried. The old agent then added fp16 to C (a second NaN in the same tree)."""
    tree, parent, _ = _tree_with_a_failed_fp16()
    agent = OfflineAgent(0)
    compiled_plan = {"title": "t", "steps": ["s"], "transformations": ["compile:default"]}
    compiled = _code(
        agent.complete(_request(Role.CODE, parent_code=parent.code, plan=compiled_plan))
    )
    branch = _node(tree, parent.node_id, compiled, "optimize", speedup=2.0)
    for tried in (["inference_mode", "compile:default"], ["compile:max-autotune-no-cudagraphs"]):
        plan = {"title": "t", "steps": ["s"], "transformations": tried}
        child = _code(agent.complete(_request(Role.CODE, parent_code=compiled, plan=plan)))
        _node(tree, branch.node_id, child, "optimize", speedup=2.0)
    for plan in _plans_on(tree, branch):
        assert "fp16" not in plan["transformations"], plan["title"]


@pytest.mark.slow
def test_stark_debug_reports_the_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stark debug --agent offline` on a user's kernel it cannot fix: the report says so,
    and proposes no code (the old agent proposed the reference as the "fix")."""
    from engine.cli import main

    reference, kernel = tmp_path / "ref.py", tmp_path / "kernel.py"
    reference.write_text(TINY)
    kernel.write_text(
        "import torch\nimport torch.nn as nn\n\n\n"
        "class ModelNew(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return torch.relu(x) * 3.0\n"
    )
    args = ["debug", str(kernel), "--reference", str(reference), "--agent", "offline"]
    code = main([*args, "--device", "cpu", "--timing-budget", "0.5", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and report["fixed_code"] is None and report["fixed"] is None
    assert report["error"].startswith("debug agent: could not fix: a numerics failure")


def test_a_failed_sibling_stops_the_same_precision_move_next_door() -> None:
    """Measured on examples/elementwise_chain.py (5 rounds, before this fix): fp16 on C =
    compile:default failed (mismatch), then fp16 on C's sibling-to-be inference_mode +
    compile:default failed the same way. The sibling's failure now reaches the planner."""
    agent = OfflineAgent(0)
    tree = StarkTree(root_limit=10)
    seed = _code(agent.complete(_request(Role.SEED, round=0)))
    root = _node(tree, None, seed, "seed")

    def child(parent: StarkNode, transforms: list[str], **facts: object) -> StarkNode:
        plan = {
            "title": f"add {transforms[-1]} -> {' + '.join(transforms)}",
            "steps": ["s"],
            "transformations": transforms,
        }
        code = _code(agent.complete(_request(Role.CODE, parent_code=parent.code, plan=plan)))
        return _node(tree, parent.node_id, code, "optimize", plan_json=json.dumps(plan), **facts)

    compiled = child(root, ["compile:default"], speedup=2.0)
    mismatch = "output 0: mismatch, max abs err 0.00128 exceeds atol=0.0001 rtol=0.0001"
    child(compiled, ["compile:default", "fp16"], error=mismatch)
    both = child(compiled, ["inference_mode", "compile:default"], speedup=1.9)
    for plan in _plans_on(tree, both):
        assert "fp16" not in plan["transformations"], plan["title"]
    # and from an unrelated branch, through the "recent failures elsewhere" section
    branch = child(root, ["inference_mode"], speedup=1.0)
    other = child(branch, ["inference_mode", "compile:max-autotune-no-cudagraphs"], speedup=1.8)
    history = ctx.summaries_for_plan(tree, other)
    assert "Recent failures elsewhere in the tree:" in history.text
    for plan in _plans_on(tree, other):
        assert "fp16" not in plan["transformations"], plan["title"]
