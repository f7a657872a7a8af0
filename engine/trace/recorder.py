"""The `Trace` recorder: one object per (op, task) that writes every LLM step and
every verification of a search into `log_dir/<op>/`.

Each action (an LLM call or a verification) allocates the next step number;
conductor records (the search's own checks and choices) attach to the step of
the action they belong to. A small append-only index (`trace_index.jsonl`)
keeps what file names cannot: time, node, round, verdict, speedup; `stark
trace` reads it (and falls back to the file names if a line is missing).

structure: long because `Trace` is one recorder: every kind of record takes the same
cross-process lock, draws from the same step counter and appends to the same index,
and that protocol is easiest to check in one place. The index format is index.py, the
verify script verify_script.py, text cleaning sanitize.py, file writing engine/atomic_io.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from engine.atomic_io import (
    append_line,
    atomic_directory,
    atomic_write_text,
    remove_stale_tmp_files,
)
from engine.bench.config import EvalConfig
from engine.bench.result import EvalResult
from engine.trace.actions import ActionType, ConductorKind
from engine.trace.index import CONDUCTOR_DIR, INDEX_NAME, INDEX_VERSION, read_index, verdict_label
from engine.trace.reply import render_result, split_think
from engine.trace.sanitize import (
    DEFAULT_MAX_BYTES,
    MIN_SECRET_LEN,
    redact,
    sanitize_name,
    truncate_text,
)
from engine.trace.verify_script import (
    candidate_file_name,
    detect_impl_type,
    reference_file_name,
    render_verify_script,
    verify_script_name,
)
from engine.trace.versions import describe as describe_versions
from engine.trace.versions import environment_versions

try:  # POSIX: also serialise steps between processes sharing one trace directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".trace.lock"
_ERROR_PREVIEW_CHARS = 200

_dir_locks: dict[Path, threading.Lock] = {}
_dir_locks_guard = threading.Lock()


def _thread_lock_for(directory: Path) -> threading.Lock:
    """One lock per trace directory, shared by every Trace object in the process."""
    key = directory.resolve()
    with _dir_locks_guard:
        return _dir_locks.setdefault(key, threading.Lock())


class Trace:
    """Records one task's reasoning trail under `log_dir/<op_name>/`.

    `op_name` and `task_id` are sanitised (see `sanitize_name`); the safe forms
    are `self.op_name` and `self.task_id`. A new Trace on an existing directory
    continues the step numbering after the highest step found there (resume).
    """

    def __init__(
        self,
        op_name: str,
        task_id: str,
        log_dir: Path | str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        secrets: Iterable[str] = (),
    ) -> None:
        """`secrets`: extra values to redact wherever they appear (e.g. the API key
        in use when it came from a config file rather than the environment)."""
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._secrets = tuple(s for s in secrets if s)
        if any(len(s) < MIN_SECRET_LEN for s in self._secrets):
            raise ValueError(f"secrets to redact must be at least {MIN_SECRET_LEN} characters")
        self.op_name = sanitize_name(op_name)
        self.task_id = sanitize_name(task_id)
        self.log_dir = Path(log_dir).expanduser()
        self.dir = self.log_dir / self.op_name
        self.conductor_dir = self.dir / CONDUCTOR_DIR
        self.index_path = self.dir / INDEX_NAME
        self.max_bytes = max_bytes
        self.dir.mkdir(parents=True, exist_ok=True)
        self._thread_lock = _thread_lock_for(self.dir)
        self._prefix = f"I{self.task_id}_S"
        escaped_task, escaped_op = re.escape(self.task_id), re.escape(self.op_name)
        self._step_file = re.compile(rf"^I{escaped_task}_S(\d+)_{escaped_op}_")
        self._step_dir = re.compile(rf"^I{escaped_task}_S(\d+)_verify$")
        with self._locked():
            for directory in (self.dir, self.conductor_dir, *self._verify_dirs()):
                remove_stale_tmp_files(directory)
            self._current_step = self._highest_step_on_disk()
        self._local = threading.local()  # last_files is per thread (a parallel search)
        self.last_files = []

    @property
    def last_files(self) -> list[Path]:
        """The files the calling thread's last record wrote (threads recording at once
        each see their own)."""
        return getattr(self._local, "files", [])

    @last_files.setter
    def last_files(self, files: list[Path]) -> None:
        self._local.files = files

    # --- public API ----------------------------------------------------------------

    @property
    def current_step(self) -> int:
        """The step of the latest action (0 before the first one)."""
        return self._current_step

    def insert_designer_or_coder_record(
        self,
        res: str,
        prompt: str,
        reasoning: str,
        action_type: ActionType | str,
        *,
        node_id: int | None = None,
        round: int | None = None,
    ) -> int:
        """Write result/prompt/reasoning of one LLM call under a new step; return the step."""
        action = ActionType.parse(action_type)
        if action is ActionType.VERIFY:
            raise ValueError("VERIFY is recorded with insert_tester_record")
        res, prompt, reasoning = _text(res, "res"), _text(prompt, "prompt"), reasoning or ""
        if not reasoning:
            reasoning = split_think(res)[1]  # models that inline <think> blocks
        with self._locked():
            step = self._allocate_step()
            contents = {
                "result": render_result(res),
                "prompt": prompt,
                "reasoning": _text(reasoning, "reasoning"),
            }
            files = [
                self._write(self._action_path(step, action, k), v) for k, v in contents.items()
            ]
            self._index(step, "action", action.value, files, node_id=node_id, round=round)
            self.last_files = files
        return step

    def insert_tester_record(
        self,
        verify_res: str,
        verify_log: str,
        profile: str,
        action_type: ActionType | str = ActionType.VERIFY,
        *,
        reference_src: str | None = None,
        candidate_src: str | None = None,
        eval_config: dict[str, Any] | EvalConfig | None = None,
        node_id: int | None = None,
        round: int | None = None,
    ) -> int:
        """Write the verdict + log and the profile; with `reference_src`, `candidate_src`
        and `eval_config` also a verify folder that reproduces the verdict (without them
        there is nothing to re-run, and error_log.txt says so)."""
        action = ActionType.parse(action_type)
        verdict = _parse_verdict(verify_res)
        versions = environment_versions()
        missing = [
            name
            for name, value in (
                ("reference_src", reference_src),
                ("candidate_src", candidate_src),
                ("eval_config", eval_config),
            )
            if value is None
        ]
        config = None if eval_config is None else _config_dict(eval_config)
        reference_src = _text(reference_src, "reference_src")
        candidate_src = _text(candidate_src, "candidate_src")
        with self._locked():
            step = self._allocate_step()
            files: list[Path] = []
            impl_type: str | None = None
            if missing:
                reproduce = (
                    f"no verify folder: {', '.join(missing)} not given, so this verdict "
                    "cannot be re-run"
                )
            else:
                assert config is not None
                verify_dir = self.dir / f"{self._prefix}{step:02d}_verify"
                impl_type = detect_impl_type(candidate_src)
                files = self._write_verify_dir(
                    verify_dir, step, reference_src, candidate_src, impl_type, config, verdict
                )
                script = verify_script_name(self.op_name)
                reproduce = (
                    f"candidate: {verify_dir.name}/{files[1].name}\n"
                    f"reproduce: python {verify_dir.name}/{script}"
                )
            log_text = self._error_log(step, verify_res, verdict, verify_log, reproduce, versions)
            files.insert(0, self._write(self._action_path(step, action, "error_log"), log_text))
            profile_path = self._action_path(step, action, "profile")
            profile_text = _profile(
                redact(_text(profile, "profile"), extra=self._secrets), self.max_bytes
            )
            files.insert(1, self._write(profile_path, profile_text, truncate=False))
            self._index(
                step,
                "action",
                action.value,
                files,
                node_id=node_id,
                round=round,
                verdict=verdict_label(verdict),
                speedup=(verdict or {}).get("speedup"),
                stage=(verdict or {}).get("stage"),
                error=_first_line((verdict or {}).get("error")),
                flags=list((verdict or {}).get("flags") or []),
                impl_type=impl_type,
                versions=versions,
            )
            self.last_files = files
        return step

    def _write_verify_dir(
        self,
        verify_dir: Path,
        step: int,
        reference_src: str,
        candidate_src: str,
        impl_type: str,
        config: dict[str, Any],
        verdict: dict[str, Any] | None,
    ) -> list[Path]:
        """The reference, the candidate and verify_{op}.py; the folder appears complete
        or not at all. Sources are never truncated: a cut file could not reproduce anything."""
        ref_name = reference_file_name(self.op_name)
        cand_name = candidate_file_name(self.op_name, impl_type)
        script = render_verify_script(
            op=self.op_name,
            task_id=self.task_id,
            step=step,
            reference_file=ref_name,
            candidate_file=cand_name,
            eval_config=config,
            verdict=verdict,
            versions=environment_versions(),
        )
        script_name = verify_script_name(self.op_name)
        with atomic_directory(verify_dir) as staging:
            self._write(staging / ref_name, reference_src, truncate=False)
            self._write(staging / cand_name, candidate_src, truncate=False)
            self._write(staging / script_name, script, truncate=False, mode=0o755)
        return [verify_dir / name for name in (ref_name, cand_name, script_name)]

    def insert_conductor_record(
        self,
        kind: ConductorKind | str,
        prompt: str,
        result: str,
        *,
        node_id: int | None = None,
        round: int | None = None,
        mode: str | None = None,
        step: int | None = None,
    ) -> None:
        """Record a search decision under `step`, by default the current step (0 before any
        action). A caller whose actions interleave with others' (a parallel search) names
        the step of the action the decision is about.

        `mode` (explore/exploit) is read from a SelectNode result when not given.
        """
        if step is not None and not 0 <= step <= self._current_step:
            raise ValueError(f"step {step} is not a step of this trace (0..{self._current_step})")
        conductor = ConductorKind.parse(kind)
        prompt, result = _text(prompt, "prompt"), _text(result, "result")
        facts = _json_object(result)
        if node_id is None and isinstance(facts.get("node_id"), int):
            node_id = facts["node_id"]
        if round is None and isinstance(facts.get("round"), int):
            round = facts["round"]
        if mode is None and conductor is ConductorKind.SelectNode:
            found = re.search(r"\b(explore|exploit)\b", str(facts.get("mode") or result), re.I)
            mode = found[1].lower() if found else None
        with self._locked():
            step = self._current_step if step is None else step
            stem = f"{self._prefix}{step:02d}_{self.op_name}_{conductor.value}"
            suffix = self._free_conductor_suffix(stem)
            files = [
                self._write(self.conductor_dir / f"{stem}_{param}{suffix}.txt", text)
                for param, text in (("prompt", prompt), ("result", result))
            ]
            self._index(
                step,
                "conductor",
                conductor.value,
                files,
                node_id=node_id,
                round=round,
                mode=mode,
                detail=_one_line(facts, shown=("round", "node_id", "mode"))
                if facts
                else _first_line(result),
            )
            self.last_files = files

    def record_selection(
        self, node_id: int, mode: str, reason: str = "", *, round: int | None = None
    ) -> None:
        """Convenience SelectNode record: which node, explore or exploit, and why."""
        if mode not in ("explore", "exploit"):
            raise ValueError(f"mode must be explore or exploit, not {mode!r}")
        result = f"selected node {node_id} ({mode})" + (f": {reason}" if reason else "")
        prompt = f"select_node() round={round} mode={mode}"
        self.insert_conductor_record(
            ConductorKind.SelectNode, prompt, result, node_id=node_id, round=round, mode=mode
        )

    # --- internals ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if fcntl is None:
                yield
                return
            fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    def _verify_dirs(self) -> list[Path]:
        return [p for p in self.dir.iterdir() if p.is_dir() and self._step_dir.match(p.name)]

    def _highest_step_on_disk(self) -> int:
        """Highest step of this task in file names, verify folders and the index."""
        highest = 0
        for directory in (self.dir, self.conductor_dir):
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                match = self._step_file.match(entry.name) or self._step_dir.match(entry.name)
                if match:
                    highest = max(highest, int(match[1]))
        for record in read_index(self.index_path):
            if record.get("task_id") == self.task_id and isinstance(record.get("step"), int):
                highest = max(highest, record["step"])
        return highest

    def _allocate_step(self) -> int:
        """Next step: after our own and after anything another writer put on disk."""
        self._current_step = max(self._current_step, self._highest_step_on_disk()) + 1
        return self._current_step

    def _action_path(self, step: int, action: ActionType, param: str) -> Path:
        return self.dir / f"{self._prefix}{step:02d}_{self.op_name}_{action.value}_{param}.txt"

    def _free_conductor_suffix(self, stem: str) -> str:
        """'' normally; '_2', '_3'... when the same kind is recorded twice in one step."""
        n = 1
        while True:
            suffix = "" if n == 1 else f"_{n}"
            if not any(
                (self.conductor_dir / f"{stem}_{param}{suffix}.txt").exists()
                for param in ("prompt", "result")
            ):
                return suffix
            n += 1

    def _clean(self, text: str, *, truncate: bool = True) -> str:
        """Redact secrets, then cap the size. A pre-cut keeps redaction fast on huge
        logs; it sits far inside the part that the final cut drops."""
        if truncate:
            text = truncate_text(text, self.max_bytes * 2)
        text = redact(text, extra=self._secrets)
        return truncate_text(text, self.max_bytes) if truncate else text

    def _write(self, path: Path, text: str, *, truncate: bool = True, mode: int = 0o644) -> Path:
        atomic_write_text(path, self._clean(text, truncate=truncate), mode=mode)
        return path

    def _index(
        self,
        step: int,
        kind: str,
        action: str,
        files: list[Path],
        **extra: Any,
    ) -> None:
        record: dict[str, Any] = {
            "v": INDEX_VERSION,
            "ts": round(time.time(), 3),
            "task_id": self.task_id,
            "op": self.op_name,
            "step": step,
            "kind": kind,
            "action": action,
            "files": [str(path.relative_to(self.dir)) for path in files],
        }
        # Only free text is redacted: file names must stay exact for the timeline.
        record.update(
            {
                k: redact(v, extra=self._secrets) if isinstance(v, str) else v
                for k, v in extra.items()
            }
        )
        line = json.dumps(record, ensure_ascii=False, default=str)
        append_line(self.index_path, line)

    def _error_log(
        self,
        step: int,
        verify_res: str,
        verdict: dict[str, Any] | None,
        verify_log: str,
        reproduce: str,
        versions: dict[str, Any],
    ) -> str:
        verify_log = _text(verify_log, "verify_log")
        lines = [
            f"STARK verification: task {self.task_id}, op {self.op_name}, step {step}",
            f"recorded with: {describe_versions(versions)}",
        ]
        if verdict is None:
            lines += [
                reproduce,
                "verdict: unreadable (not EvalResult JSON); raw text follows",
                "",
                verify_res,
            ]
        else:
            try:
                summary = EvalResult.from_dict(verdict).summary()
            except (TypeError, ValueError) as exc:
                summary = f"{verdict_label(verdict)} (summary unavailable: {exc})"
            shown = {k: v for k, v in verdict.items() if k != "log"}
            lines += [
                f"verdict: {summary}",
                reproduce,
                "",
                "==== verdict (EvalResult JSON, log below) ====",
                json.dumps(shown, indent=2, ensure_ascii=False, default=str),
            ]
            worker_log = verdict.get("log") or ""
            if worker_log and worker_log.strip() != verify_log.strip():
                lines += ["", "==== worker log (from the verdict) ====", worker_log]
        lines += ["", "==== verification log ====", verify_log]
        return "\n".join(lines).rstrip("\n") + "\n"


# --- helpers ---------------------------------------------------------------------------


def _text(value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _parse_verdict(verify_res: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_text(verify_res, "verify_res"))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _config_dict(eval_config: dict[str, Any] | EvalConfig) -> dict[str, Any]:
    """A complete, validated EvalConfig as a dict (defaults filled in, so the
    verify script states every setting explicitly)."""
    if isinstance(eval_config, EvalConfig):
        return eval_config.to_dict()
    if not isinstance(eval_config, dict):
        raise TypeError(
            f"eval_config must be a dict or EvalConfig, not {type(eval_config).__name__}"
        )
    return EvalConfig.from_dict(eval_config).to_dict()


def _profile(profile: str, max_bytes: int) -> str:
    """The profile as pretty JSON, always valid JSON: text that is not JSON, or that
    is too large, is kept (truncated with a marker) as a JSON string."""
    if not profile.strip():
        return "null\n"
    try:
        text = json.dumps(json.loads(profile), indent=2, ensure_ascii=False) + "\n"
    except ValueError:
        text = json.dumps({"unparsed_profile": truncate_text(profile, max_bytes)}, indent=2)
    limit = max_bytes
    while len(text.encode()) > max_bytes and limit > 256:  # escaping inflates: shrink, retry
        limit = limit * max_bytes // len(text.encode()) - 128
        text = json.dumps({"truncated_profile": truncate_text(profile, max(limit, 256))}, indent=2)
    return text if text.endswith("\n") else text + "\n"


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object a conductor result holds (checks often record one), else {}."""
    try:
        value = json.loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _one_line(facts: dict[str, Any], shown: tuple[str, ...]) -> str:
    """Compact JSON of a decision, minus the keys the timeline has columns for."""
    rest = {k: v for k, v in facts.items() if k not in shown}
    return json.dumps(rest, ensure_ascii=False, default=str)[:_ERROR_PREVIEW_CHARS]


def _first_line(text: object) -> str | None:
    if not text:
        return None
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:_ERROR_PREVIEW_CHARS] or None
