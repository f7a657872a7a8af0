"""Agent settings: precedence of arguments, STARK_*/OPENAI_* variables and TOML, and that
the API key never shows up in any printable form."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.agents.base import Role
from engine.agents.factory import make_agent
from engine.agents.offline import OfflineAgent
from engine.agents.openai_agent import OpenAIAgent
from engine.agents.settings import AgentSettings, SettingsError, redact_url

KEY = "sk-test-SECRET-0123456789"


def test_defaults_match_the_paper(tmp_path: Path) -> None:
    settings = AgentSettings.from_env(env={}, search_dir=tmp_path)
    assert (settings.plan.temperature, settings.code.temperature, settings.debug.temperature) == (
        0.8,
        0.1,
        0.1,
    )
    assert settings.for_role(Role.SEED) == settings.code
    assert settings.for_role(Role.REPAIR) == settings.code
    assert not settings.endpoint_configured
    assert settings.api_key is None


def test_precedence_argument_over_stark_over_openai_over_file(tmp_path: Path) -> None:
    (tmp_path / "stark.toml").write_text(
        "[agent]\n"
        'model = "file-model"\n'
        'base_url = "http://file:1/v1"\n'
        "max_retries = 7\n"
        "[agent.debug]\n"
        "temperature = 0.3\n"
        'model = "file-debug"\n'
    )
    env = {
        "OPENAI_BASE_URL": "http://openai-env:2/v1",
        "OPENAI_API_KEY": "sk-openai",
        "STARK_MODEL": "stark-model",
        "STARK_PLAN_MODEL": "stark-plan",
        "STARK_CODE_TEMPERATURE": "0.05",
    }
    settings = AgentSettings.from_env(env=env, search_dir=tmp_path)
    assert settings.plan.model == "stark-plan"  # role-specific env beats general env
    assert settings.code.model == "stark-model"  # STARK_* env beats the file
    assert settings.debug.model == "stark-model"  # a general env value beats a file role value
    assert settings.code.temperature == 0.05
    assert settings.debug.temperature == 0.3  # only the file sets it
    assert settings.plan.base_url == "http://openai-env:2/v1"  # OPENAI_* env beats the file
    assert settings.max_retries == 7
    assert settings.api_key == "sk-openai"
    assert settings.config_path == str(tmp_path / "stark.toml")

    env["STARK_BASE_URL"] = "http://stark-env:3/v1/"
    env["STARK_API_KEY"] = "sk-stark"
    settings = AgentSettings.from_env(env=env, search_dir=tmp_path)
    assert settings.code.base_url == "http://stark-env:3/v1"
    assert settings.api_key == "sk-stark"

    settings = AgentSettings.from_env(
        env=env, search_dir=tmp_path, model="arg-model", api_key="sk-arg", plan_temperature=1.0
    )
    assert {settings.plan.model, settings.code.model, settings.debug.model} == {"arg-model"}
    assert settings.api_key == "sk-arg"
    assert settings.plan.temperature == 1.0


def test_pyproject_tool_table_and_key_from_named_variable(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n'
        "[tool.stark.agent]\n"
        'base_url = "http://localhost:11434/v1"\n'
        'api_key_env = "MY_LLM_KEY"\n'
        "stream = true\n"
        "[tool.stark.agent.plan]\n"
        'model = "qwen2.5-coder:32b"\n'
        "[tool.stark.agent.prices]\n"
        '"qwen2.5-coder:32b" = [0.0, 0.0]\n'
    )
    settings = AgentSettings.from_env(env={"MY_LLM_KEY": KEY}, search_dir=tmp_path)
    assert settings.plan.model == "qwen2.5-coder:32b"
    assert settings.code.base_url == "http://localhost:11434/v1"
    assert settings.stream is True
    assert settings.api_key == KEY
    assert settings.price_for("qwen2.5-coder:32b") == (0.0, 0.0)
    assert settings.price_for("gpt-4o-2024-08-06") == settings.price_for("gpt-4o")
    assert settings.price_for("unknown-model") is None


def test_key_is_never_printed(tmp_path: Path) -> None:
    settings = AgentSettings.from_env(
        env={"OPENAI_API_KEY": KEY, "STARK_BASE_URL": "http://user:pw@host:8000/v1?key=abc"},
        search_dir=tmp_path,
    )
    assert settings.endpoint_configured
    for text in (repr(settings), str(settings), str(settings.to_public_dict())):
        assert KEY not in text
        assert "pw" not in text and "key=abc" not in text
    assert settings.to_public_dict()["api_key_set"] is True
    assert "api_key" not in settings.to_public_dict()
    assert redact_url("http://user:pw@host:8000/v1?key=abc") == "http://host:8000/v1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STARK_PLAN_TEMPERATURE": "hot"}, "STARK_PLAN_TEMPERATURE"),
        ({"STARK_CODE_TEMPERATURE": "3"}, "between 0 and 2"),
        ({"STARK_MAX_RETRIES": "-1"}, "max_retries"),
        ({"STARK_STREAM": "maybe"}, "true or false"),
        ({"STARK_TIMEOUT": "0"}, "timeout_s"),
    ],
)
def test_bad_environment_values_get_clear_errors(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        AgentSettings.from_env(env=env, search_dir=tmp_path)


def test_bad_files_and_arguments_get_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "stark.toml").write_text(f'[agent]\napi_key = "{KEY}"\n')
    with pytest.raises(SettingsError, match="api_key_env") as caught:
        AgentSettings.from_env(env={}, search_dir=tmp_path)
    assert KEY not in str(caught.value)
    (tmp_path / "stark.toml").write_text("[agent]\nmodle = 'typo'\n")
    with pytest.raises(SettingsError, match="modle"):
        AgentSettings.from_env(env={}, search_dir=tmp_path)
    (tmp_path / "stark.toml").write_text("[agent\n")
    with pytest.raises(SettingsError, match="cannot read"):
        AgentSettings.from_env(env={}, search_dir=tmp_path)
    with pytest.raises(SettingsError, match="not found"):
        AgentSettings.from_env(env={}, config_file=tmp_path / "missing.toml")
    with pytest.raises(SettingsError, match="plan_temprature"):
        AgentSettings.from_env(env={}, search_dir=tmp_path / "none", plan_temprature=0.5)


def test_factory_picks_offline_without_an_endpoint(tmp_path: Path) -> None:
    unconfigured = AgentSettings.from_env(env={}, search_dir=tmp_path)
    assert isinstance(make_agent("auto", unconfigured, seed=3), OfflineAgent)
    assert make_agent("offline", None, seed=3).model_for(Role.PLAN) == "stark-offline"
    local = AgentSettings.from_env(
        env={"STARK_BASE_URL": "http://127.0.0.1:1/v1"}, search_dir=tmp_path
    )
    assert isinstance(make_agent("auto", local, seed=3), OpenAIAgent)
    assert isinstance(make_agent("openai", local, seed=3), OpenAIAgent)
    with pytest.raises(ValueError, match="unknown agent kind 'gpt'"):
        make_agent("gpt", local, seed=0)
