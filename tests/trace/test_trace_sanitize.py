"""Hostile names, secret redaction and truncation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.bench import EvalConfig, EvalResult
from engine.trace import ActionType, Trace, redact, sanitize_name
from engine.trace.sanitize import REDACTED, looks_like_random_key, truncate_text

FAKE_OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
FAKE_ENV_SECRET = "q7-not-a-real-value-but-secret"


@pytest.mark.parametrize(
    "hostile",
    [
        "../../etc/passwd",
        "a/b",
        "a\\b",
        "",
        "..",
        ".",
        "/abs/path",
        "x" * 300,
        "tab\tnew\nline\x00nul\x1b[31m",
        "算子",
        "~root",
        " spaced name ",
    ],
)
def test_hostile_names_stay_inside_log_dir(tmp_path: Path, hostile: str) -> None:
    safe = sanitize_name(hostile)
    assert safe and len(safe) <= 64
    assert set(safe) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    assert sanitize_name(hostile) == safe  # deterministic
    trace = Trace(hostile, hostile, tmp_path / "logs")
    trace.insert_designer_or_coder_record("r", "p", "", ActionType.DO_CODER)
    trace.insert_conductor_record("CheckCoder", "p", "r")
    for path in (tmp_path / "logs").rglob("*"):
        assert path.resolve().is_relative_to((tmp_path / "logs").resolve())
    assert [p.name for p in (tmp_path / "logs").iterdir()] == [safe]


def test_sanitize_examples() -> None:
    assert sanitize_name("exp_add_op") == "exp_add_op"  # safe names are untouched
    assert sanitize_name("123") == "123"
    assert sanitize_name("../../etc/passwd").startswith("etc_passwd-")
    assert sanitize_name("a/b") != sanitize_name("a_b")  # no collision after cleaning
    assert sanitize_name("").startswith("unnamed-")
    assert sanitize_name("x" * 300) != sanitize_name("x" * 301)


def test_known_key_formats_are_redacted() -> None:
    samples = {
        FAKE_OPENAI_KEY: REDACTED,
        "sk-abcdefghijklmnopqrstuvwxyz012345": REDACTED,
        "Authorization: Bearer abc.def-123456789": f"Authorization: {REDACTED}",
        "curl -H 'authorization: token ghp_x'": f"curl -H 'authorization: {REDACTED}'",
        '{"Authorization": "Bearer eyJhbGciOi"}': f'{{"Authorization": "{REDACTED}"}}',
        "bearer AbCdEfGh12345678": f"bearer {REDACTED}",
        "OPENAI_API_KEY=abc123def456ghi789": f"OPENAI_API_KEY={REDACTED}",
        'client = OpenAI(api_key="hunter22")': f'client = OpenAI(api_key="{REDACTED}")',
        "password: 's3cr3t-pass'": f"password: '{REDACTED}'",
        "ghp_" + "a1B2" * 9: REDACTED,
        "AKIAIOSFODNN7EXAMPLE": REDACTED,
        "key hf_" + "Zx9" * 12 + " end": f"key {REDACTED} end",
    }
    for text, expected in samples.items():
        assert redact(text, environ={}) == expected, text


def test_env_secret_values_are_redacted() -> None:
    env = {"MY_SERVICE_TOKEN": FAKE_ENV_SECRET, "HOME": "/home/user", "SHORT_KEY": "abc"}
    text = f"token={FAKE_ENV_SECRET} at /home/user with abc"
    assert redact(text, environ=env) == f"token={REDACTED} at /home/user with abc"


def test_generic_high_entropy_token_is_redacted() -> None:
    token = "Zq8XvT2mLp9RkW4nBc7YhJ3sDf6GtA1uE5oQ"
    assert looks_like_random_key(token)
    assert redact(f"leaked {token} here", environ={}) == f"leaked {REDACTED} here"


CODE_THAT_MUST_SURVIVE = '''
import os
import torch
from torch.utils.cpp_extension import load_inline

CUDA_SRC = r"""
__global__ void fused_gelu_sigmoid_clamp_kernel(const float* __restrict__ x, float* y, int n) {
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) { y[idx] = x[idx] * 2.0f; }
}
"""
api_key = os.environ["OPENAI_API_KEY"]
client = make_client(api_key=api_key, token=settings.token)
digest = "3f2a9c1b7e4d5a6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
name = "conductor/I123_S00_etc_passwd-3754d6cb_SelectNode_prompt.txt"
path = "/work/main/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py"
class FusedGeluSigmoidClampWithChannelsLast2dKernelV2(torch.nn.Module):
    pass
ext = load_inline(name="fused_gelu_sigmoid_clamp_ext_v2", cpp_sources="", cuda_sources=CUDA_SRC)
# The basic token embeddings use a bearer of bad news: authorization pending
'''


def test_code_is_not_destroyed() -> None:
    assert redact(CODE_THAT_MUST_SURVIVE, environ={}) == CODE_THAT_MUST_SURVIVE


def test_secrets_never_reach_trace_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STARK_TEST_SECRET", FAKE_ENV_SECRET)
    trace = Trace("op", "1", tmp_path)
    prompt = f"system prompt\nAuthorization: Bearer {FAKE_OPENAI_KEY}\nuse key {FAKE_OPENAI_KEY}"
    reply = f"```python\n# key {FAKE_ENV_SECRET}\nclass ModelNew: ...\n```"
    trace.insert_designer_or_coder_record(reply, prompt, f"I saw {FAKE_OPENAI_KEY}", "DO_CODER")
    verdict = EvalResult(error=f"crash with api_key={FAKE_OPENAI_KEY}", log=FAKE_ENV_SECRET)
    trace.insert_tester_record(
        verdict.to_json(),
        f"worker log: OPENAI_API_KEY={FAKE_OPENAI_KEY}\nenv {FAKE_ENV_SECRET}\n",
        "",
        reference_src="class Model: ...\n",
        candidate_src="class ModelNew: ...\n",
        eval_config=EvalConfig(device="cpu"),
    )
    trace.insert_conductor_record("AnalyzeError", f"tail {FAKE_OPENAI_KEY}", FAKE_ENV_SECRET)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 10
    for path in files:
        text = path.read_text()
        assert FAKE_OPENAI_KEY not in text, path
        assert FAKE_OPENAI_KEY[10:30] not in text, path
        assert FAKE_ENV_SECRET not in text, path
    prompt_file = tmp_path / "op" / "I1_S01_op_DO_CODER_prompt.txt"
    assert prompt_file.read_text().startswith("system prompt\nAuthorization: [REDACTED]\n")


def test_truncation_keeps_head_and_tail_with_marker() -> None:
    text = "HEAD\n" + "x" * 10_000 + "\nTAIL"
    cut = truncate_text(text, 1000)
    assert cut.startswith("HEAD\n") and cut.endswith("\nTAIL")
    assert "STARK TRACE:" in cut and "bytes truncated" in cut
    assert len(cut.encode()) < 1200
    assert truncate_text("short", 1000) == "short"
    multibyte = "é" * 5000  # cut points never split a UTF-8 character
    assert "\ufffd" not in truncate_text(multibyte, 999)


def test_huge_log_is_truncated_in_trace(tmp_path: Path) -> None:
    trace = Trace("op", "1", tmp_path, max_bytes=4096)
    log = "compile started\n" + "warning: noisy line\n" * 50_000 + "FATAL: the real error\n"
    trace.insert_tester_record(
        EvalResult(compiled=False, error="boom", stage="compile").to_json(),
        log,
        "[" + ",".join(['{"name": "op", "self_ms": 1.0}'] * 2000) + "]",
        reference_src="r" * 10_000,  # sources are never truncated
        candidate_src="c" * 10_000,
        eval_config={"device": "cpu"},
    )
    error_log = (tmp_path / "op" / "I1_S01_op_VERIFY_error_log.txt").read_text()
    assert len(error_log.encode()) < 4096 + 200
    assert "STARK TRACE:" in error_log and "FATAL: the real error" in error_log
    assert "STARK verification" in error_log  # the head survives too
    profile = (tmp_path / "op" / "I1_S01_op_VERIFY_profile.txt").read_text()
    assert "truncated_profile" in profile and len(profile.encode()) < 4096 + 400
    verify = tmp_path / "op" / "I1_S01_verify"
    assert (verify / "op_torch.py").read_text() == "r" * 10_000
    assert os.path.getsize(verify / "op_torch_new.py") == 10_000


def test_explicit_secrets_are_redacted(tmp_path: Path) -> None:
    key = "local-llm-key-42"  # from a config file, not the environment
    trace = Trace("op", "1", tmp_path, secrets=[key])
    trace.insert_designer_or_coder_record(f"x {key}", f"key={key}", key, "DO_CODER")
    for path in (tmp_path / "op").glob("I1_*"):
        assert key not in path.read_text()
    with pytest.raises(ValueError, match="at least"):
        Trace("op", "1", tmp_path, secrets=["abc"])


AZURE_KEY = "0f3c9a7be21d4c5e8a6b7c9d0e1f2a3b"  # 32 hex characters, Azure style


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key={AZURE_KEY}", f"key={REDACTED}"),
        (f"Ocp-Apim-Subscription-Key: {AZURE_KEY}", f"Ocp-Apim-Subscription-Key: {REDACTED}"),
        (f'{{"key": "{AZURE_KEY}"}}', f'{{"key": "{REDACTED}"}}'),
        (f"TOKEN={AZURE_KEY[:16]}", f"TOKEN={REDACTED}"),
        ("token: Xj3fA5skZFQac056FRYX3UuX", f"token: {REDACTED}"),
    ],
)
def test_bare_key_and_token_values_are_redacted(text: str, expected: str) -> None:
    assert redact(text, environ={}) == expected


@pytest.mark.parametrize(
    "code",
    [
        "sorted(xs, key=lambda item: item[0])",
        "sorted(xs, key=operator.itemgetter(1))",
        "token = tokens[0]",
        "token=settings.token",
        "key: cache_key_for_layer_12",
        "key=x86_64-linux-gnu-2024",
        "key=ModelNewForward123",
        "key=0123456789012345",  # digits only: a number, not a key
        'key = f"{op}_{shape}"',
        f"monkey={AZURE_KEY}",  # not the word `key`
    ],
)
def test_bare_key_names_leave_ordinary_code_alone(code: str) -> None:
    assert redact(code, environ={}) == code
