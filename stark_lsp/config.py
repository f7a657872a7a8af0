"""Settings for the server: `initializationOptions`, then the `stark` section of
`workspace/configuration` (later wins). The API key is kept out of every repr,
log and event; it only reaches the engine subprocess's environment."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

AGENTS = ("auto", "offline", "openai")
DEVICES = ("auto", "cpu", "cuda")
INIT_OPTIONS = "initializationOptions"  # the only origin that may set engineCommand

# Names of environment variables that hold secrets (same rule as engine/trace/sanitize.py).
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)


def is_secret_name(name: str) -> bool:
    """True for OPENAI_API_KEY, STARK_API_KEY, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, ..."""
    return bool(_SECRET_NAME.search(name))


# `stark optimize` flags a user may add through `optimizeArgs`, with their value type
# (None: a switch). Everything else is refused: flags the server sets itself (--agent,
# --model, --base-url, --device, --seed, --out, --events, ...) would desynchronise the
# job or redirect the key, and a workspace setting must never smuggle in other options.
OPTIMIZE_FLAGS: dict[str, type | None] = {
    "--root-limit": int,
    "--leader-topk": int,
    "--n-child": int,
    "--timeout": float,
    "--llm-timeout": float,
    "--context-budget": int,
    "--timing-budget": float,
    "--correctness-trials": int,
    "--no-profile": None,
}


class SettingsError(ValueError):
    """A setting has the wrong type or value; the message names it."""


@dataclass(slots=True, frozen=True)
class Settings:
    agent: str = "auto"
    model: str | None = None
    base_url: str | None = None
    rounds: int = 10
    epsilon: float | None = None
    # correctness tolerances for optimize and verify jobs (`--atol`/`--rtol`); None: the
    # benchmarker's default for the output dtype
    atol: float | None = None
    rtol: float | None = None
    device: str = "auto"
    seed: int = 0
    # Expansions in flight within one optimization job (`stark optimize --parallel`); the
    # timings of every job on one device take turns either way (the device lease).
    parallel: int = 1
    max_concurrent_jobs: int = 2
    auto_run: bool = False
    watch_globs: tuple[str, ...] = ()
    watch_debounce_ms: int = 400
    trust: bool = True
    out_dir: str | None = None
    # Extra CLI arguments passed to every `stark optimize` (e.g. a smaller timing budget);
    # only OPTIMIZE_FLAGS are accepted.
    optimize_args: tuple[str, ...] = ()
    # Test hook: replaces `python -m engine` (fault injection only). Accepted from
    # initializationOptions only: a workspace's settings must not choose what we execute.
    engine_command: tuple[str, ...] | None = None
    api_key: str | None = field(default=None, repr=False)

    def redacted(self) -> dict[str, Any]:
        """Everything but the key, for logs and `stark.jobs`."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
        data["api_key"] = "<set>" if self.effective_api_key() else None
        return data

    def effective_api_key(self) -> str | None:
        return self.api_key or os.environ.get("STARK_API_KEY") or os.environ.get("OPENAI_API_KEY")


# camelCase setting (as clients send it) -> (field name, converter)
def _as_int(name: str, low: int, high: int):
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise SettingsError(f"stark.{name} must be an integer, not {value!r}")
        if not low <= int(value) <= high:
            raise SettingsError(f"stark.{name} must be between {low} and {high}, not {value}")
        return int(value)

    return convert


def _as_choice(name: str, choices: tuple[str, ...]):
    def convert(value: Any) -> str:
        if value not in choices:
            raise SettingsError(f"stark.{name} must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    return convert


def _as_optional_str(name: str):
    def convert(value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise SettingsError(f"stark.{name} must be a string")
        return value

    return convert


def _as_bool(name: str):
    def convert(value: Any) -> bool:
        if not isinstance(value, bool):
            raise SettingsError(f"stark.{name} must be true or false, not {value!r}")
        return value

    return convert


def _as_str_list(name: str):
    def convert(value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"stark.{name} must be a list of strings")
        return tuple(value)

    return convert


def _as_epsilon(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise SettingsError(f"stark.epsilon must be a number in [0, 1], not {value!r}")
    return float(value)


def _as_tolerance(name: str):
    def convert(value: Any) -> float | None:
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value < float("inf")  # NaN fails both comparisons
        ):
            raise SettingsError(
                f"stark.{name} must be a finite number >= 0 (e.g. 1e-3), or null for the "
                f"default of the output's dtype, not {value!r}"
            )
        return float(value)

    return convert


def tolerance_args(settings: Settings) -> list[str]:
    """`--atol X --rtol Y` for the tolerances that are set (`stark optimize` and `stark
    bench` accept them; unset means the engine's dtype default)."""
    args: list[str] = []
    for flag, value in (("--atol", settings.atol), ("--rtol", settings.rtol)):
        if value is not None:
            args += [flag, repr(value)]
    return args


def _as_optimize_args(value: Any) -> tuple[str, ...]:
    """`["--timeout", "60", "--no-profile", "--n-child=2"]`: known flags, valid values."""
    args = _as_str_list("optimizeArgs")(value)
    known = ", ".join(OPTIMIZE_FLAGS)
    i = 0
    while i < len(args):
        flag, equals, inline = args[i].partition("=")
        if flag not in OPTIMIZE_FLAGS:
            raise SettingsError(
                f"stark.optimizeArgs: {args[i]!r} is not allowed (allowed flags: {known})"
            )
        kind = OPTIMIZE_FLAGS[flag]
        if kind is None:
            if equals:
                raise SettingsError(f"stark.optimizeArgs: {flag} takes no value")
            i += 1
            continue
        if equals:
            raw = inline
            i += 1
        elif i + 1 < len(args):
            raw = args[i + 1]
            i += 2
        else:
            raise SettingsError(f"stark.optimizeArgs: {flag} needs a value")
        try:
            number = kind(raw)
        except ValueError:
            raise SettingsError(
                f"stark.optimizeArgs: {flag} needs a {kind.__name__}, not {raw!r}"
            ) from None
        if not 0 < number < float("inf"):  # NaN fails both comparisons
            raise SettingsError(f"stark.optimizeArgs: {flag} must be positive, not {raw!r}")
    return args


def _as_engine_command(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    converted = _as_str_list("engineCommand")(value)
    if not converted:
        raise SettingsError("stark.engineCommand must not be empty")
    return converted


_KEYS: dict[str, tuple[str, Any]] = {
    "agent": ("agent", _as_choice("agent", AGENTS)),
    "model": ("model", _as_optional_str("model")),
    "baseUrl": ("base_url", _as_optional_str("baseUrl")),
    "rounds": ("rounds", _as_int("rounds", 1, 1000)),
    "epsilon": ("epsilon", _as_epsilon),
    "atol": ("atol", _as_tolerance("atol")),
    "rtol": ("rtol", _as_tolerance("rtol")),
    "device": ("device", _as_choice("device", DEVICES)),
    "seed": ("seed", _as_int("seed", 0, 2**31 - 1)),
    "parallel": ("parallel", _as_int("parallel", 1, 64)),
    "maxConcurrentJobs": ("max_concurrent_jobs", _as_int("maxConcurrentJobs", 1, 64)),
    "autoRun": ("auto_run", _as_bool("autoRun")),
    "trust": ("trust", _as_bool("trust")),
    "outDir": ("out_dir", _as_optional_str("outDir")),
    "optimizeArgs": ("optimize_args", _as_optimize_args),
    "engineCommand": ("engine_command", _as_engine_command),
    "apiKey": ("api_key", _as_optional_str("apiKey")),
}


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Accept both `{"watch": {"globs": [...]}}` and `{"watch.globs": [...]}`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "watch" and isinstance(value, dict):
            for sub, sub_value in value.items():
                flat[f"watch.{sub}"] = sub_value
        else:
            flat[key] = value
    return flat


def merge(
    settings: Settings, data: Any, *, allow_engine_command: bool = False
) -> tuple[Settings, list[str]]:
    """Apply one settings object; returns the new settings and the problems found
    (a bad value keeps the previous one and is reported, never crashes the server).
    `engineCommand` is honoured only with `allow_engine_command` (initializationOptions):
    from `workspace/configuration` a cloned repository's settings could run anything."""
    if data is None:
        return settings, []
    if not isinstance(data, dict):
        return settings, [f"stark settings must be an object, not {type(data).__name__}"]
    if isinstance(data.get("stark"), dict):  # initializationOptions may nest the section
        data = {**{k: v for k, v in data.items() if k != "stark"}, **data["stark"]}
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in _flatten(data).items():
        try:
            if key == "watch.globs":
                changes["watch_globs"] = _as_str_list("watch.globs")(value)
            elif key == "watch.debounceMs":
                changes["watch_debounce_ms"] = _as_int("watch.debounceMs", 0, 60_000)(value)
            elif key == "engineCommand" and not allow_engine_command:
                if value is not None:
                    problems.append(
                        "stark.engineCommand is ignored outside initializationOptions "
                        "(a workspace setting must not choose the command the server runs)"
                    )
            elif key in _KEYS:
                name, convert = _KEYS[key]
                changes[name] = convert(value)
            # unknown keys (e.g. the client's own `interpreter`, `trace.server`) are ignored
        except SettingsError as exc:
            problems.append(str(exc))
    atol = changes.get("atol", settings.atol)
    rtol = changes.get("rtol", settings.rtol)
    if atol == 0 and rtol == 0:  # the engine refuses `--atol 0 --rtol 0`
        problems.append("stark.atol and stark.rtol cannot both be 0")
        changes.pop("atol", None)
        changes.pop("rtol", None)
    return replace(settings, **changes), problems


_KEY_FIELD = re.compile(
    r"""((?:api_?key|apiKey|authorization)['"]?\s*[:=]\s*['"]?(?:Bearer\s+)?)[^'",}\s]+""", re.I
)


class SecretFilter(logging.Filter):
    """Last line of defence: no log record leaves with an API key in it, whether
    the key is named in a field or appears verbatim (from settings or the env)."""

    def __init__(self, secrets: Callable[[], list[str]]) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _KEY_FIELD.sub(r"\1<redacted>", message)
        for secret in self._secrets():
            if secret and len(secret) >= 6:
                cleaned = cleaned.replace(secret, "<redacted>")
        if record.exc_info:
            import traceback

            text = "".join(traceback.format_exception(*record.exc_info))
            for secret in self._secrets():
                if secret and len(secret) >= 6 and secret in text:
                    record.exc_info = None
                    cleaned += " (traceback withheld: it contained a secret)"
                    break
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
