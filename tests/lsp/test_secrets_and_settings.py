"""What reaches an engine job: the API key only when the job calls a model, no
other secret ever to a verification; `engineCommand` only from
initializationOptions; `optimizeArgs` only from an allow-list. Engines are
tests/lsp/fake_engine.py (through the `engineCommand` hook), so these run fast."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from lsprotocol import types

from .helpers import Session, fake_engine_command, lsp_session

CLIENT_KEY = "sk-client-handed-key-98765"
ENV_SECRETS = {
    "OPENAI_API_KEY": "sk-env-openai-key-1234567",
    "STARK_API_KEY": "sk-env-stark-key-7654321",
    "GITHUB_TOKEN": "ghp_not_a_real_token_abcdef",
    "MY_SERVICE_SECRET": "hunter2-but-longer",
}
KERNEL = (
    "# stark: reference=tiny_ref.py\nclass ModelNew:\n    def forward(self, x):\n        return x\n"
)


def _recorded(state: Path, command: str) -> dict[str, str]:
    return json.loads((state / f"env_{command}.json").read_text())


async def _finish(session: Session, command: str, arguments: dict) -> dict:
    job_id = (await session.command(command, arguments))["jobId"]
    return await session.wait_job(job_id, timeout=60)


def _secrets_in(env: dict[str, str]) -> list[str]:
    values = [*ENV_SECRETS.values(), CLIENT_KEY]
    return sorted(
        name
        for name, value in env.items()
        if name in ENV_SECRETS or any(s in value for s in values)
    )


async def test_only_model_calling_jobs_get_the_key(workspace: Path) -> None:
    state = workspace.parent / "engine_state"
    (workspace / "k.py").write_text(KERNEL)
    options = {"apiKey": CLIENT_KEY, "engineCommand": fake_engine_command(state)}
    env = {**ENV_SECRETS, "STARK_HARMLESS_SETTING": "kept"}
    async with lsp_session(workspace, options=options, env=env) as session:
        ref_uri = (workspace / "tiny_ref.py").resolve().as_uri()
        kernel_uri = (workspace / "k.py").resolve().as_uri()

        # a verification runs untrusted kernels and calls no model: no secret at all
        final = await _finish(session, "stark.verify", {"uri": kernel_uri})
        assert final["state"] == "done", final
        bench_env = _recorded(state, "bench")
        assert bench_env["STARK_HARMLESS_SETTING"] == "kept"  # the env really was recorded
        assert _secrets_in(bench_env) == []

        # the offline agent calls no model either
        final = await _finish(session, "stark.optimize", {"uri": ref_uri, "agent": "offline"})
        assert final["state"] == "done", final
        assert _secrets_in(_recorded(state, "optimize")) == []

        # a model-calling optimize and debug get the client's key (and keep their env)
        final = await _finish(session, "stark.optimize", {"uri": ref_uri, "agent": "openai"})
        assert final["state"] == "done", final
        optimize_env = _recorded(state, "optimize")
        assert optimize_env["OPENAI_API_KEY"] == optimize_env["STARK_API_KEY"] == CLIENT_KEY

        await _finish(session, "stark.debug", {"uri": kernel_uri, "agent": "openai"})
        assert _recorded(state, "debug")["STARK_API_KEY"] == CLIENT_KEY
        await _finish(session, "stark.debug", {"uri": kernel_uri, "agent": "offline"})
        assert _secrets_in(_recorded(state, "debug")) == []


async def _settings_applied(session: Session, predicate) -> dict:
    """The server pulls `workspace/configuration` after `initialized`: poll for it."""
    for _ in range(200):
        info = await session.command("stark.serverInfo")
        if predicate(info["settings"]):
            return info["settings"]
        await asyncio.sleep(0.05)
    raise AssertionError(f"settings never applied: {info['settings']}")


async def test_engine_command_only_from_initialization_options(workspace: Path) -> None:
    trusted = workspace.parent / "trusted_state"
    from_workspace = workspace.parent / "workspace_state"
    (workspace / "k.py").write_text(KERNEL)
    configuration = {"stark": {"engineCommand": fake_engine_command(from_workspace), "rounds": 3}}
    options = {"engineCommand": fake_engine_command(trusted)}
    async with lsp_session(workspace, options=options, configuration=configuration) as session:
        await _settings_applied(session, lambda s: s["rounds"] == 3)
        kernel_uri = (workspace / "k.py").resolve().as_uri()
        assert (await _finish(session, "stark.verify", {"uri": kernel_uri}))["state"] == "done"
        assert (trusted / "env_bench.json").exists()
        assert not (from_workspace / "env_bench.json").exists()
        await session.wait_for(
            lambda: any("engineCommand is ignored" in m.message for m in session.client.messages),
            10,
            "a warning about the ignored engineCommand",
        )

        # pushed through didChangeConfiguration: ignored too
        session.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"stark": {"engineCommand": fake_engine_command(from_workspace)}}
            )
        )
        (trusted / "env_bench.json").unlink()
        assert (await _finish(session, "stark.verify", {"uri": kernel_uri}))["state"] == "done"
        assert (trusted / "env_bench.json").exists()
        assert not (from_workspace / "env_bench.json").exists()


async def test_optimize_args_are_checked_against_the_allow_list(workspace: Path) -> None:
    state = workspace.parent / "engine_state"
    configuration = {
        "stark": {"optimizeArgs": ["--base-url", "http://attacker.invalid/v1"], "rounds": 2}
    }
    options = {"engineCommand": fake_engine_command(state)}
    async with lsp_session(workspace, options=options, configuration=configuration) as session:
        await _settings_applied(session, lambda s: s["rounds"] == 2)
        await session.wait_for(
            lambda: any(
                "'--base-url' is not allowed" in m.message for m in session.client.messages
            ),
            10,
            "a warning about the refused optimizeArgs",
        )
        session.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(
                settings={"stark": {"optimizeArgs": ["--timeout", "60", "--no-profile"]}}
            )
        )
        await _settings_applied(
            session, lambda s: s["optimize_args"] == ["--timeout", "60", "--no-profile"]
        )
        ref_uri = (workspace / "tiny_ref.py").resolve().as_uri()
        assert (await _finish(session, "stark.optimize", {"uri": ref_uri}))["state"] == "done"
        argv = json.loads((state / "argv_optimize.json").read_text())
        assert argv[-3:] == ["--timeout", "60", "--no-profile"]
        assert "http://attacker.invalid/v1" not in argv


async def test_tolerances_reach_optimize_and_verify_and_bad_ones_are_refused(
    workspace: Path,
) -> None:
    state = workspace.parent / "engine_state"
    (workspace / "k.py").write_text(KERNEL)
    configuration = {"stark": {"atol": -1, "rtol": "loose", "rounds": 2}}
    options = {"engineCommand": fake_engine_command(state)}
    async with lsp_session(workspace, options=options, configuration=configuration) as session:
        await _settings_applied(session, lambda s: s["rounds"] == 2)
        for name, value in (("atol", "-1"), ("rtol", "'loose'")):
            await session.wait_for(
                lambda name=name, value=value: any(
                    f"stark.{name} must be a finite number >= 0" in m.message
                    and m.message.endswith(f"not {value}")
                    for m in session.client.messages
                ),
                10,
                f"a warning about stark.{name}",
            )
        info = await session.command("stark.serverInfo")
        assert info["settings"]["atol"] is None and info["settings"]["rtol"] is None

        ref_uri = (workspace / "tiny_ref.py").resolve().as_uri()
        kernel_uri = (workspace / "k.py").resolve().as_uri()
        assert (await _finish(session, "stark.optimize", {"uri": ref_uri}))["state"] == "done"
        argv = json.loads((state / "argv_optimize.json").read_text())
        assert "--atol" not in argv and "--rtol" not in argv  # unset: the dtype's default

        session.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"stark": {"atol": 1e-3, "rtol": 0.02}})
        )
        await _settings_applied(session, lambda s: s["atol"] == 1e-3 and s["rtol"] == 0.02)
        assert (await _finish(session, "stark.optimize", {"uri": ref_uri}))["state"] == "done"
        argv = json.loads((state / "argv_optimize.json").read_text())
        assert argv[argv.index("--atol") + 1] == "0.001"
        assert argv[argv.index("--rtol") + 1] == "0.02"
        verify = await _finish(session, "stark.verify", {"uri": kernel_uri})
        assert verify["state"] == "done"
        argv = json.loads((state / "argv_bench.json").read_text())
        assert argv[argv.index("--atol") + 1] == "0.001"
        assert argv[argv.index("--rtol") + 1] == "0.02"
        # the verification's reproduction script uses the same tolerances
        script = next((workspace / "stark_runs" / ".lsp" / verify["jobId"]).glob("verify_*.py"))
        assert "'--atol', '0.001', '--rtol', '0.02'" in script.read_text()


def test_a_zero_tolerance_is_a_valid_setting_but_not_both() -> None:
    """Old code refused stark.atol = 0 (a pure-relative allclose the engine accepts)."""
    from stark_lsp.config import Settings, merge

    settings, problems = merge(Settings(), {"atol": 0, "rtol": 1e-3})
    assert problems == [] and (settings.atol, settings.rtol) == (0.0, 1e-3)
    settings, problems = merge(settings, {"rtol": 0})
    assert problems == ["stark.atol and stark.rtol cannot both be 0"]
    assert (settings.atol, settings.rtol) == (0.0, 1e-3)  # the previous values stay
    for bad in (-1e-9, float("nan"), float("inf")):
        _, problems = merge(Settings(), {"rtol": bad})
        assert problems and "stark.rtol must be a finite number >= 0" in problems[0]


async def test_parallel_reaches_optimize_and_a_bad_value_is_refused(workspace: Path) -> None:
    state = workspace.parent / "engine_state"
    configuration = {"stark": {"parallel": 0, "rounds": 2}}
    options = {"engineCommand": fake_engine_command(state)}
    async with lsp_session(workspace, options=options, configuration=configuration) as session:
        await _settings_applied(session, lambda s: s["rounds"] == 2)
        await session.wait_for(
            lambda: any(
                "stark.parallel must be between 1 and 64, not 0" in m.message
                for m in session.client.messages
            ),
            10,
            "a warning about stark.parallel",
        )
        ref_uri = (workspace / "tiny_ref.py").resolve().as_uri()
        assert (await _finish(session, "stark.optimize", {"uri": ref_uri}))["state"] == "done"
        argv = json.loads((state / "argv_optimize.json").read_text())
        assert "--parallel" not in argv  # 1, the engine's default

        session.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"stark": {"parallel": 4}})
        )
        await _settings_applied(session, lambda s: s["parallel"] == 4)
        assert (await _finish(session, "stark.optimize", {"uri": ref_uri}))["state"] == "done"
        argv = json.loads((state / "argv_optimize.json").read_text())
        assert argv[argv.index("--parallel") + 1] == "4"
