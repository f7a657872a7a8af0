"""Unit tests of the safety rails: glob expansion off the loop with pruned
directories, background tasks that are kept and whose failures are logged,
event type checks, the optimizeArgs allow-list, engineCommand's origin and the
child environment of a job."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.artifacts.events import NodeSnapshot, RoundFinished, event_from_dict
from stark_lsp import config, disk_watch, launch
from stark_lsp.background import BackgroundTasks
from stark_lsp.eventcheck import MalformedEvent, check_event
from stark_lsp.server import StarkLanguageServer

from .helpers import TINY_REFERENCE


def _tree(root: Path) -> None:
    (root / "tasks" / "a").mkdir(parents=True)
    (root / "tasks" / "a" / "ref_1.py").write_text(TINY_REFERENCE)
    (root / "ref_top.py").write_text(TINY_REFERENCE)
    for skipped in ("node_modules/pkg", ".venv/lib", "build", "pkg.egg-info", ".git/x"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "ref_hidden.py").write_text(TINY_REFERENCE)


def test_expand_prunes_skip_dirs_before_descending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path)
    visited: list[str] = []
    real_walk = os.walk

    def recording_walk(top, *args, **kwargs):
        for entry in real_walk(top, *args, **kwargs):
            visited.append(entry[0])
            yield entry  # the same lists: pruning by the caller still applies

    monkeypatch.setattr(disk_watch.os, "walk", recording_walk)
    found = disk_watch.expand([tmp_path], ("**/ref_*.py",))
    assert found == {(tmp_path / "ref_top.py").resolve(), (tmp_path / "tasks/a/ref_1.py").resolve()}
    entered = {Path(v).relative_to(tmp_path).parts[0] for v in visited if Path(v) != tmp_path}
    assert entered == {"tasks"}  # node_modules, .venv, build, *.egg-info, .git never entered
    assert disk_watch.expand([tmp_path], ("*.py",)) == {(tmp_path / "ref_top.py").resolve()}


async def test_configure_expands_in_a_worker_thread_while_the_loop_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path)
    release = threading.Event()
    threads: list[int] = []
    real_expand = disk_watch.expand

    def slow_expand(roots: list[Path], globs: tuple[str, ...]) -> set[Path]:
        threads.append(threading.get_ident())
        assert release.wait(10), "the loop never got to run while the glob expanded"
        return real_expand(roots, globs)

    monkeypatch.setattr(disk_watch, "expand", slow_expand)
    server = SimpleNamespace(background=BackgroundTasks())
    manager = disk_watch.WatchManager(server)  # type: ignore[arg-type]
    try:
        manager.configure(("**/ref_*.py",), [tmp_path])  # returns before the walk ends
        assert manager.watched() == []
        # the loop keeps running other work (a handler) while the expansion waits
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait_for(manager.ready(), 10)
        assert threads and threads[0] != threading.get_ident()
        assert len(manager.watched()) == 2

        # a newer configuration supersedes an expansion still in progress
        release.clear()
        manager.configure(("**/nothing_*.py",), [tmp_path])
        manager.configure(("*.py",), [tmp_path])
        release.set()
        await asyncio.wait_for(manager.ready(), 10)
        assert manager.watched() == [(tmp_path / "ref_top.py").resolve()]
    finally:
        manager.stop()


async def test_background_tasks_are_kept_and_failures_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = BackgroundTasks()
    gate = asyncio.Event()

    async def waits() -> None:
        await gate.wait()

    async def fails() -> None:
        raise RuntimeError("boom in the background")

    tasks.spawn(waits(), "waiter")
    with caplog.at_level(logging.ERROR, logger="stark_lsp.background"):
        failing = tasks.spawn(fails(), "failer")
        await asyncio.wait([failing])
        await asyncio.sleep(0)
    assert len(tasks) == 1  # the finished one is dropped, the running one is held
    assert "background task failer failed" in caplog.text and "boom" in caplog.text
    gate.set()
    await asyncio.sleep(0.01)
    assert len(tasks) == 0


def test_event_type_checks() -> None:
    node = {"id": 1, "parent": None, "phase": "seed", "runnable": True, "buggy": False}
    node |= {"speedup": 1.2, "round": 0}
    good = {"event": "round_finished", "task_id": "t", "round": 0, "rounds": 2}
    good |= {"best_speedup": 1.2, "nodes": 1, "buggy": 0, "tree": [node]}
    check_event(event_from_dict(good))
    for bad in (
        {**good, "round": "zero"},
        {**good, "best_speedup": float("nan")},
        {**good, "tree": [{**node, "id": "one"}]},
        {**good, "tree": [{**node, "runnable": 1}]},
        {**good, "tree": "nodes"},
    ):
        with pytest.raises(MalformedEvent):
            check_event(event_from_dict(bad))
    snapshot = NodeSnapshot(1, None, "seed", True, False, None, 0)
    check_event(RoundFinished(task_id="t", round=0, rounds=1, best_speedup=None, nodes=1,
                              buggy=0, tree=[snapshot]))  # fmt: skip


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--base-url", "http://x"], "'--base-url' is not allowed"),
        (["--out=/tmp/elsewhere"], "'--out=/tmp/elsewhere' is not allowed"),
        (["--agent", "openai"], "is not allowed"),
        (["--timeout"], "--timeout needs a value"),
        (["--timeout", "soon"], "--timeout needs a float"),
        (["--n-child", "2.5"], "--n-child needs a int"),
        (["--timeout", "-1"], "--timeout must be positive"),
        (["--timeout", "nan"], "--timeout must be positive"),
        (["--no-profile=yes"], "--no-profile takes no value"),
        (["--timeout", "60", "python", "-c", "x"], "'python' is not allowed"),
    ],
)
def test_optimize_args_allow_list_refuses(args: list[str], problem: str) -> None:
    before = config.Settings(optimize_args=("--no-profile",))
    settings, problems = config.merge(before, {"optimizeArgs": args})
    assert settings.optimize_args == ("--no-profile",)  # the previous value is kept
    assert len(problems) == 1 and problem in problems[0], problems


def test_optimize_args_allow_list_accepts() -> None:
    args = ["--timeout", "60", "--n-child=2", "--no-profile", "--timing-budget", "0.5"]
    settings, problems = config.merge(config.Settings(), {"optimizeArgs": args})
    assert problems == [] and settings.optimize_args == tuple(args)


def test_engine_command_needs_initialization_options() -> None:
    command = ["sh", "-c", "touch /tmp/pwned"]
    settings, problems = config.merge(config.Settings(), {"engineCommand": command})
    assert settings.engine_command is None and "engineCommand is ignored" in problems[0]
    settings, problems = config.merge(
        config.Settings(), {"engineCommand": command}, allow_engine_command=True
    )
    assert settings.engine_command == tuple(command) and problems == []


def test_child_environment_has_no_secret_unless_it_calls_a_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-env-123456")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-123456")
    monkeypatch.setenv("HF_TOKEN", "hf_123456789")
    monkeypatch.setenv("STARK_MODEL", "some-model")
    server = StarkLanguageServer()
    server.settings, _ = config.merge(server.settings, {"apiKey": "sk-client-key-42"})
    bench = launch.engine_env(server.settings, calls_model=False)
    assert not [name for name in bench if config.is_secret_name(name)]
    assert bench["STARK_MODEL"] == "some-model" and "PYTHONPATH" in bench
    model = launch.engine_env(server.settings, calls_model=True)
    assert model["OPENAI_API_KEY"] == model["STARK_API_KEY"] == "sk-client-key-42"


def test_stark_lsp_layout_has_no_cycle_or_dodged_import() -> None:
    """The features hang off core/server/support modules, never off each other or the
    wiring (scripts/check_structure.py, which `make test` runs for the whole tree)."""
    import importlib.util
    import sys

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "check_structure", root / "scripts" / "check_structure.py"
    )
    assert spec is not None and spec.loader is not None
    checker = importlib.util.module_from_spec(spec)
    sys.modules["check_structure"] = checker
    spec.loader.exec_module(checker)
    modules = checker.scan(("stark_lsp",))
    assert checker.findings(modules, checker.DEFAULT_MAX_LINES) == []
    features = {name for name in modules if name.startswith("stark_lsp.features.")}
    for name in features:
        assert not (modules[name].imports & (features | {"stark_lsp.app"})), name


def test_one_failing_job_listener_does_not_silence_the_others() -> None:
    server = StarkLanguageServer()
    heard: list[str] = []

    def broken(job: object, event: object) -> None:
        raise RuntimeError("boom")

    server.job_listeners += [broken, lambda job, event: heard.append("second")]
    server._on_job_update(SimpleNamespace(id="job-1"), None)  # type: ignore[arg-type]
    assert heard == ["second"]
