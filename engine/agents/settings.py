"""Which model each agent role talks to, and how: one resolved, immutable settings object.

Sources, highest precedence first (the first source that sets a value wins):

1. explicit arguments to `AgentSettings.from_env` (the CLI's `--model`, ...);
2. `STARK_*` environment variables;
3. `OPENAI_API_KEY` / `OPENAI_BASE_URL` (the standard client variables);
4. a TOML file: `stark.toml` (`[agent]` table) or `pyproject.toml` (`[tool.stark.agent]`);
5. built-in defaults (plan temperature 0.8, code and debug 0.1).

Within one source a role-specific value (`STARK_PLAN_MODEL`, `[agent.plan] model`) beats the
general one (`STARK_MODEL`, `[agent] model`). The API key is never printed: it is excluded from
`repr()` and from `to_public_dict()`, and a TOML file may only name the environment variable
holding it (`api_key_env`), never the key itself.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.agents.base import Role

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TEMPERATURES: dict[str, float] = {"plan": 0.8, "code": 0.1, "debug": 0.1}
ROLE_KEYS = ("plan", "code", "debug")  # roles with their own settings; seed/repair borrow
ROLE_FIELDS = ("model", "base_url", "temperature")
GLOBAL_FIELDS = ("timeout_s", "max_retries", "max_tokens", "stream")

# Approximate list prices in USD per 1M tokens (input, output). Unknown models cost None.
# Override or extend with `[agent.prices] "model-name" = [input, output]` in the TOML file.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
}


class SettingsError(ValueError):
    """A bad setting (unknown key, unparsable number); the message names where it came from."""


@dataclass(frozen=True, slots=True)
class RoleSettings:
    model: str
    base_url: str | None  # None: the client's default (api.openai.com)
    temperature: float


def redact_url(url: str | None) -> str | None:
    """Drop user:password@ and the query string, which some proxies use to carry keys."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class AgentSettings:
    plan: RoleSettings
    code: RoleSettings
    debug: RoleSettings
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 600.0
    max_retries: int = 4  # extra attempts after the first one
    max_tokens: int | None = 8192
    stream: bool = False
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0  # also caps an endpoint's Retry-After
    prices: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    config_path: str | None = None  # the TOML file that was read, if any

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def defaults(cls) -> AgentSettings:
        roles = {
            name: RoleSettings(DEFAULT_MODEL, None, DEFAULT_TEMPERATURES[name])
            for name in ROLE_KEYS
        }
        return cls(**roles)

    @classmethod
    def from_env(
        cls,
        *,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        search_dir: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> AgentSettings:
        """Resolve settings from arguments, environment and TOML (see the module docstring).

        `overrides` takes `{plan,code,debug}_{model,base_url,temperature}` and
        `timeout_s`, `max_retries`, `max_tokens`, `stream`; None means "not given".
        `env` defaults to `os.environ`; `search_dir` (default: the current directory) is where
        `stark.toml` / `pyproject.toml` are looked for when `config_file` is not given.
        """
        environ = os.environ if env is None else env
        allowed = {f"{r}_{f}" for r in ROLE_KEYS for f in ROLE_FIELDS} | set(GLOBAL_FIELDS)
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise SettingsError(f"unknown agent setting(s): {', '.join(unknown)}")

        path, file_table = _load_file(config_file, search_dir)
        explicit = _Layer("argument", {k: v for k, v in overrides.items() if v is not None})
        explicit.put("model", model)
        explicit.put("base_url", base_url)
        layers = [
            explicit,
            _stark_env_layer(environ),
            _openai_env_layer(environ),
            _file_layer(file_table, path),
        ]

        roles = {}
        for role in ROLE_KEYS:
            model_value = _resolve(layers, role, "model") or DEFAULT_MODEL
            url_value = _resolve(layers, role, "base_url") or None
            temperature = _resolve(layers, role, "temperature")
            roles[role] = RoleSettings(
                model=str(model_value),
                base_url=str(url_value).rstrip("/") if url_value else None,
                temperature=DEFAULT_TEMPERATURES[role] if temperature is None else temperature,
            )

        key = api_key
        if key is None:
            key = environ.get("STARK_API_KEY") or environ.get("OPENAI_API_KEY")
        if key is None and file_table.get("api_key_env"):
            key = environ.get(str(file_table["api_key_env"]))

        prices = dict(DEFAULT_PRICES)
        prices.update(_file_prices(file_table, path))
        base = cls(**roles, api_key=key or None, prices=prices, config_path=path)
        globals_ = {}
        for name in GLOBAL_FIELDS:
            value = _resolve(layers, None, name)
            if value is not None:
                globals_[name] = value
        return replace(base, **globals_)

    # --- use --------------------------------------------------------------------------------

    def for_role(self, role: Role | str) -> RoleSettings:
        """SEED writes code, so it uses the code settings; a bare REPAIR uses them too
        (agents map a repair request to its role with `base.repaired_role` first)."""
        name = str(role)
        if name in ("seed", "repair"):
            name = "code"
        if name not in ROLE_KEYS:
            raise SettingsError(f"unknown agent role {role!r}")
        return getattr(self, name)

    @property
    def endpoint_configured(self) -> bool:
        """True when the user pointed us at a model: a key, or a base URL (local servers
        such as vLLM or Ollama need no key)."""
        return bool(self.api_key) or any(getattr(self, r).base_url for r in ROLE_KEYS)

    def price_for(self, model: str) -> tuple[float, float] | None:
        if model in self.prices:
            return self.prices[model]
        # dated snapshots such as "gpt-4o-2024-08-06" cost what their family costs
        family = max((m for m in self.prices if model.startswith(m + "-")), key=len, default=None)
        return self.prices[family] if family else None

    def to_public_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce a run except the secret (safe for files and logs)."""
        return {
            "roles": {
                r: {
                    "model": getattr(self, r).model,
                    "base_url": redact_url(getattr(self, r).base_url),
                    "temperature": getattr(self, r).temperature,
                }
                for r in ROLE_KEYS
            },
            "api_key_set": bool(self.api_key),
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "max_tokens": self.max_tokens,
            "stream": self.stream,
            "config_path": self.config_path,
        }

    def __repr__(self) -> str:
        public = self.to_public_dict()
        roles = ", ".join(
            f"{r}={v['model']}@{v['base_url'] or 'default'} t={v['temperature']}"
            for r, v in public["roles"].items()
        )
        key = "set" if self.api_key else "unset"
        return (
            f"AgentSettings({roles}, api_key=<{key}>, timeout_s={self.timeout_s}, "
            f"max_retries={self.max_retries}, stream={self.stream})"
        )

    __str__ = __repr__


# --- resolution helpers ---------------------------------------------------------------------


class _Layer:
    """One source of settings, keyed "role_field" or "field", values already typed."""

    def __init__(self, name: str, values: dict[str, Any] | None = None) -> None:
        self.name = name
        self.values: dict[str, Any] = {}
        for key, value in (values or {}).items():
            self.put(key, value)

    def put(self, key: str, value: Any) -> None:
        if value is None or value == "":
            return
        self.values[key] = _convert(key, value, self.name)


def _resolve(layers: list[_Layer], role: str | None, field_name: str) -> Any:
    for layer in layers:
        if role is not None and f"{role}_{field_name}" in layer.values:
            return layer.values[f"{role}_{field_name}"]
        if field_name in layer.values:
            return layer.values[field_name]
    return None


def _field_of(key: str) -> str:
    for role in ROLE_KEYS:
        if key.startswith(role + "_"):
            return key[len(role) + 1 :]
    return key


def _convert(key: str, value: Any, source: str) -> Any:
    """Type-check one value; errors say which source and key were wrong (never a secret)."""
    name = _field_of(key)
    try:
        if name in ("model", "base_url"):
            if not isinstance(value, str):
                raise TypeError("expected a string")
            return value.strip()
        if name == "temperature":
            number = float(value)
            if not 0.0 <= number <= 2.0 or math.isnan(number):
                raise ValueError("must be between 0 and 2")
            return number
        if name == "timeout_s":
            number = float(value)
            if not number > 0:
                raise ValueError("must be > 0")
            return number
        if name == "max_retries":
            count = int(value)
            if count < 0:
                raise ValueError("must be >= 0")
            return count
        if name == "max_tokens":
            count = int(value)
            if count <= 0:
                raise ValueError("must be > 0")
            return count
        if name == "stream":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{source}: bad value {value!r} for {key}: {exc}") from None
    raise SettingsError(f"{source}: unknown agent setting {key!r}")


_ENV_GLOBALS = {
    "STARK_TIMEOUT": "timeout_s",
    "STARK_MAX_RETRIES": "max_retries",
    "STARK_MAX_TOKENS": "max_tokens",
    "STARK_STREAM": "stream",
}


def _stark_env_layer(environ: Mapping[str, str]) -> _Layer:
    layer = _Layer("environment")
    for env_name, key in _ENV_GLOBALS.items():
        if env_name in environ:
            layer.put(key, environ[env_name])
    layer.put("model", environ.get("STARK_MODEL"))
    layer.put("base_url", environ.get("STARK_BASE_URL"))
    for role in ROLE_KEYS:
        for name in ROLE_FIELDS:
            env_name = f"STARK_{role.upper()}_{name.upper()}"
            if env_name in environ:
                try:
                    layer.put(f"{role}_{name}", environ[env_name])
                except SettingsError as exc:
                    raise SettingsError(str(exc).replace(f"for {role}_{name}", env_name)) from None
    return layer


def _openai_env_layer(environ: Mapping[str, str]) -> _Layer:
    layer = _Layer("environment")
    layer.put("base_url", environ.get("OPENAI_BASE_URL"))
    return layer


_FILE_GLOBAL_KEYS = set(GLOBAL_FIELDS) | {"model", "base_url", "api_key_env", "prices"}


def _file_layer(table: Mapping[str, Any], path: str | None) -> _Layer:
    source = path or "config file"
    layer = _Layer(source)
    for key, value in table.items():
        if key == "api_key":
            raise SettingsError(
                f"{source}: do not put the API key in a file; set api_key_env to the name "
                "of the environment variable that holds it"
            )
        if key in ROLE_KEYS:
            if not isinstance(value, Mapping):
                raise SettingsError(f"{source}: [{key}] must be a table")
            for sub_key, sub_value in value.items():
                if sub_key not in ROLE_FIELDS:
                    raise SettingsError(f"{source}: unknown key {sub_key!r} in [{key}]")
                layer.put(f"{key}_{sub_key}", sub_value)
        elif key in ("api_key_env", "prices"):
            continue
        elif key in _FILE_GLOBAL_KEYS:
            layer.put(key, value)
        else:
            raise SettingsError(f"{source}: unknown agent setting {key!r}")
    return layer


def _file_prices(table: Mapping[str, Any], path: str | None) -> dict[str, tuple[float, float]]:
    prices = table.get("prices", {})
    if not isinstance(prices, Mapping):
        raise SettingsError(f"{path}: [prices] must be a table of model = [input, output]")
    result = {}
    for model_name, pair in prices.items():
        if not (isinstance(pair, list) and len(pair) == 2):
            raise SettingsError(f"{path}: price for {model_name!r} must be [input, output]")
        result[str(model_name)] = (float(pair[0]), float(pair[1]))
    return result


def _load_file(
    config_file: str | os.PathLike[str] | None, search_dir: str | os.PathLike[str] | None
) -> tuple[str | None, dict[str, Any]]:
    """The agent table of the config file, or {} when there is none."""
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"agent config file not found: {path}")
        return str(path), _agent_table(path)
    directory = Path(search_dir) if search_dir is not None else Path.cwd()
    for candidate in (directory / "stark.toml", directory / "pyproject.toml"):
        if candidate.is_file():
            table = _agent_table(candidate)
            if table or candidate.name == "stark.toml":
                return str(candidate), table
    return None, {}


def _agent_table(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("stark", {}).get("agent", {})
    else:
        table = data.get("agent", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: the agent settings must be a table")
    return table
