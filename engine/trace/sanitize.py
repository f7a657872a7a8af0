"""Make untrusted text safe to put on disk: names that cannot escape the trace
directory, secrets that never reach a file, and logs cut to a bounded size.

Names come from users and models (op names, task ids); a trace directory must
never be steered elsewhere by them. Secrets (API keys, bearer tokens) can slip
into prompts, replies or worker logs; the trace is meant to be shared, so they
are replaced by `[REDACTED]` before anything is written.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping

REDACTED = "[REDACTED]"
DEFAULT_MAX_BYTES = 1024 * 1024
MAX_NAME_LEN = 64
_HASH_LEN = 8
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_name(name: object, *, max_len: int = MAX_NAME_LEN) -> str:
    """A file-name component made of [A-Za-z0-9_-] only, deterministic for a given input.

    A name that had to change gets a short hash of the original appended, so two
    different hostile names (`a/b` and `a_b`) never collide in one directory.
    """
    original = "" if name is None else str(name)
    cleaned = _SAFE_CHARS.sub("_", original)
    cleaned = re.sub(r"_{2,}", "_", cleaned).strip("_-")
    if cleaned == original and 0 < len(cleaned) <= max_len:
        return cleaned
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LEN]
    base = (cleaned or "unnamed")[: max_len - _HASH_LEN - 1].rstrip("_-") or "unnamed"
    return f"{base}-{digest}"


# --- secret redaction ------------------------------------------------------------------

# Well-known key formats: each one is unambiguous, so it is redacted wherever it appears.
_KEY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bsk-(?:proj-|ant-|or-|live-|test-)?[A-Za-z0-9_\-]{16,}"),  # OpenAI & co.
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{30,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{30,}"),  # Hugging Face
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),  # Google API key
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),  # Slack
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JWT
    re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
    ),
)

# `Authorization: <anything>` (HTTP header style, also inside JSON/dict reprs).
_AUTH_HEADER = re.compile(
    r"""(?P<head>\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?)(?P<value>[^"'\r\n,}]+)""",
    re.I,
)
_BEARER = re.compile(r"(?P<head>\bbearer\s+)(?P<value>[A-Za-z0-9._~+/=\-]{8,})", re.I)
_SECRET_NAME = (
    r"(?:[A-Za-z0-9]+[_-])*(?:api[_-]?key|apikey|access[_-]?key|secret(?:[_-]?key)?|"
    r"client[_-]?secret|(?:access|auth|refresh|bearer|session)[_-]?token|password|passwd)"
)
# name = "literal" (any quoted literal of 4+ characters after a secret-looking name).
_ASSIGN_QUOTED = re.compile(
    rf"""(?P<head>\b{_SECRET_NAME}["']?\s*[:=]\s*(?P<q>["']))(?P<value>[^"'\r\n]{{4,}})(?P=q)""",
    re.I,
)
# name=value unquoted (shell, .env, URLs): only values that look like tokens (contain a
# digit), so `api_key=api_key` or `api_key=os.environ[...]` in code stays intact.
_ASSIGN_BARE = re.compile(
    rf"""(?P<head>\b{_SECRET_NAME}\s*[:=]\s*)(?P<value>(?=[A-Za-z0-9._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{{8,}})""",
    re.I,
)
# A bare `key`/`token` name (`key=...`, `"token": "..."`, `Ocp-Apim-Subscription-Key: ...`)
# followed by a value that looks random (`looks_like_secret_value`): Azure-style keys are
# 32 hex characters, which neither the key formats nor the entropy scan below catch.
_BARE_KEY_NAME = re.compile(
    r"""(?P<head>\b(?:key|token)["']?\s*[:=]\s*["']?)(?P<value>[A-Za-z0-9._~+/=\-]{16,})""",
    re.I,
)
_MIN_VALUE_LEN = 16
_MIN_VALUE_ENTROPY_BITS = 3.0  # 32 random hex characters: about 3.8
# A long run of key alphabet that mixes upper, lower and digits with high entropy:
# hex digests (lower+digits) and identifiers (low entropy, underscores) do not qualify.
# Longer runs are data blobs (base64 in code), not keys, and are left alone.
_CANDIDATE_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_+/=\-])[A-Za-z0-9_+/=\-]{32,128}(?![A-Za-z0-9_+/=\-])"
)
_ENV_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)
_MIN_ENV_SECRET_LEN = 8
MIN_SECRET_LEN = 6  # shorter explicit secrets would shred ordinary text
_MIN_ENTROPY_BITS = 4.3


def _entropy(text: str) -> float:
    counts = Counter(text)
    total = len(text)
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def looks_like_random_key(token: str) -> bool:
    """True for strings like `Xk3...` API keys; False for identifiers, digests and words."""
    if len(token) < 32:
        return False
    body = token.rstrip("=")
    if sum(ch.isdigit() for ch in body) < 2:
        return False
    if not any(ch.isupper() for ch in body) or not any(ch.islower() for ch in body):
        return False
    if sum(ch in "_-/+" for ch in body) > len(body) // 16:
        return False  # snake_case / kebab identifiers, paths, file names
    if _word_fraction(body) >= 0.4 or _class_change_rate(body) < 0.42:
        return False  # CamelCase identifiers: long lowercase words, few case changes
    return _entropy(body) >= _MIN_ENTROPY_BITS


def looks_like_secret_value(value: str) -> bool:
    """True for a 16+ character value after `key=`/`token:` that looks random (hex or
    base62 with digits, varied characters); False for identifiers, paths, expressions
    (`settings.token`, `cache_key_for_layer_1`) and words."""
    body = value.rstrip("=")
    if len(body) < _MIN_VALUE_LEN:
        return False
    if sum(ch.isdigit() for ch in body) < 2 or not any(ch.isalpha() for ch in body):
        return False
    if sum(ch in "_-/+." for ch in body) > len(body) // 16:
        return False
    if _word_fraction(body) >= 0.4 or len(set(body)) < 10:
        return False
    return _entropy(body) >= _MIN_VALUE_ENTROPY_BITS


def _word_fraction(text: str) -> float:
    """Share of characters inside lowercase runs of 3+ (words); ~0.15 for random keys."""
    return sum(len(word) for word in re.findall(r"[a-z]{3,}", text)) / len(text)


def _char_class(ch: str) -> int:
    return 0 if ch.isupper() else 1 if ch.islower() else 2 if ch.isdigit() else 3


def _class_change_rate(text: str) -> float:
    """How often adjacent characters differ in class; ~0.6 for random base62 keys."""
    changes = sum(
        _char_class(a) != _char_class(b) for a, b in zip(text[:-1], text[1:], strict=True)
    )
    return changes / (len(text) - 1)


def env_secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they hold a secret, longest first."""
    environ = os.environ if environ is None else environ
    values = {
        value
        for name, value in environ.items()
        if _ENV_SECRET_NAME.search(name)
        and len(value) >= _MIN_ENV_SECRET_LEN
        and not value.startswith(("/", "~"))  # a path to a key file is not the key
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> str:
    """Replace every secret in `text` by `[REDACTED]`, keeping the text around it.

    `extra`: known secret values (at least MIN_SECRET_LEN characters) to redact too.
    """
    if not text:
        return text
    known = {value for value in extra if len(value) >= MIN_SECRET_LEN}
    for value in sorted(known | set(env_secret_values(environ)), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern in _KEY_PATTERNS:
        text = pattern.sub(REDACTED, text)
    text = _AUTH_HEADER.sub(_keep_head, text)
    text = _BEARER.sub(_keep_head, text)
    text = _ASSIGN_QUOTED.sub(lambda m: f"{m['head']}{REDACTED}{m['q']}", text)
    text = _ASSIGN_BARE.sub(_keep_head, text)
    text = _BARE_KEY_NAME.sub(
        lambda m: f"{m['head']}{REDACTED}" if looks_like_secret_value(m["value"]) else m[0], text
    )
    return _CANDIDATE_TOKEN.sub(lambda m: REDACTED if looks_like_random_key(m[0]) else m[0], text)


def _keep_head(match: re.Match[str]) -> str:
    if match["value"].strip() == REDACTED:
        return match[0]
    return f"{match['head']}{REDACTED}"


def truncate_text(text: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Keep the head and the tail of an over-long text with a visible marker between.

    Both ends matter in a log: the head says what ran, the tail says how it ended.
    The result is at most about `max_bytes` UTF-8 bytes (plus the marker line).
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    head_bytes = max_bytes // 2
    tail_bytes = max_bytes - head_bytes
    head = data[:head_bytes].decode("utf-8", "ignore")
    tail = data[len(data) - tail_bytes :].decode("utf-8", "ignore")
    dropped = len(data) - len(head.encode()) - len(tail.encode())
    marker = (
        f"\n[... STARK TRACE: {dropped} bytes truncated here "
        f"(file was {len(data)} bytes, limit {max_bytes}) ...]\n"
    )
    return head + marker + tail
