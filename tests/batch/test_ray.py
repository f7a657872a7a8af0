"""`stark batch --ray ADDRESS` on a real Ray cluster started here (`ray start --head` on
127.0.0.1, 2 CPUs): the verdicts of one process, a Ray worker killed mid-task (retried once,
then that task's error, the batch goes on), and kill -9 of the driver then `--resume --ray`.
Skipped where Ray is not installed; the error a user then gets is tested in any case."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine.batch.ray_runner import RunDirNotShared, check_shared_run_dir
from engine.cli import main
from tests.batch.conftest import (
    ROOT,
    batch_args,
    run_stark,
    stark_command,
    tree_nodes,
    verdicts,
    verify_counts,
)

ROUNDS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ray_environment(env: dict[str, str]) -> dict[str, str]:
    """A cluster of our own on loopback only: single-node mode (no address but 127.0.0.1
    is ever used), no usage reports, and token authentication with a token of its own (not
    ~/.ray/auth_token), which the `stark` drivers get too."""
    return {
        **env,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's single-node switch: loopback only
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }


@pytest.fixture(scope="module")
def ray_cluster(stark_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """A head node (address, environment for drivers); at teardown its processes, found by
    our temp dir, are killed by pid."""
    pytest.importorskip("ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="sr", dir="/tmp"))  # short: Ray's socket paths
    port = free_port()
    ray = Path(sys.executable).parent / "ray"
    env = ray_environment(stark_env)
    command = [
        str(ray),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-3000:]
        yield f"127.0.0.1:{port}", env
    finally:
        ours = [
            p
            for p in psutil.process_iter(["cmdline"])
            if str(temp_dir) in " ".join(p.info["cmdline"] or [])
        ]
        for proc in ours:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(ours, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def lock_holder(lock: Path) -> int | None:
    """The pid holding an flock on `lock` (from /proc/locks), if any."""
    try:
        inode = lock.stat().st_ino
    except OSError:
        return None
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].split(":")[-1] == str(inode):
            return int(fields[4])
    return None


def start_batch(
    command: list[str], env: dict[str, str], started: list[Any]
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    started.append(proc)
    return proc


def the_run_dir(out: Path) -> Path:
    return wait_for(lambda: next(iter(out.glob("batch-*")), None), 120, "the run directory")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_batch_gives_the_verdicts_of_one_process(
    ray_cluster: tuple[str, dict[str, str]], serial_run: Path, batch_refs: Path, tmp_path: Path
) -> None:
    ray_address, env = ray_cluster
    summary = run_stark(batch_args(batch_refs, tmp_path / "runs", "--ray", ray_address), env)
    run_dir = Path(summary["run_dir"])
    assert summary["execution"] == {"workers": None, "ray": ray_address}
    assert verdicts(run_dir) == verdicts(serial_run)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_ray_worker_is_retried_once_then_is_that_tasks_error(
    ray_cluster: tuple[str, dict[str, str]],
    batch_refs: Path,
    tmp_path: Path,
    child_processes: list[Any],
) -> None:
    ray_address, stark_env = ray_cluster
    out = tmp_path / "runs"
    args = batch_args(batch_refs, out, "--ray", ray_address, "--json", rounds=ROUNDS)
    proc = start_batch(stark_command(*args), stark_env, child_processes)
    run_dir = the_run_dir(out)
    retried, doomed = "000_a_relu", "001_b_tanh"  # the two that start first on 2 CPUs

    def running_with_a_node(name: str) -> int | None:
        holder = lock_holder(run_dir / ".locks" / f"{name}.lock")
        return holder if holder and tree_nodes(run_dir / name) else None

    first = wait_for(lambda: running_with_a_node(retried), 300, f"{retried} mid-task")
    before = {n["node_id"]: n["code"] for n in tree_nodes(run_dir / retried)}
    counts = verify_counts(run_dir / retried)
    os.kill(first, signal.SIGKILL)
    for attempt in range(2):  # the first attempt and Ray's one retry
        victim = wait_for(lambda: running_with_a_node(doomed), 300, f"{doomed} attempt {attempt}")
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda v=victim: (
                not psutil.pid_exists(v) or lock_holder(run_dir / ".locks" / f"{doomed}.lock") != v
            ),
            60,
            "the kill",
        )
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    tasks = {t["task"]: t for t in summary["tasks"]}
    assert len(tasks) == 3 and summary["tasks_pending"] == 0
    # Retried once: it resumed from its tree.json, its earlier nodes neither lost nor redone.
    assert tasks[retried]["error"] is None and tasks[retried]["nodes"] == ROUNDS
    after = {n["node_id"]: n["code"] for n in tree_nodes(run_dir / retried)}
    assert {i: after[i] for i in before} == before
    now = verify_counts(run_dir / retried)
    assert {i: now.get(i, 0) for i in before} == {i: counts.get(i, 0) for i in before}
    # Killed on both attempts: that task's error; the batch went on.
    assert "WorkerCrashedError" in tasks[doomed]["error"] and "2 attempts" in tasks[doomed]["error"]
    assert tasks["002_c_sigmoid"]["error"] is None and tasks["002_c_sigmoid"]["nodes"] == ROUNDS


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill9_of_a_ray_driver_then_resume_on_ray(
    ray_cluster: tuple[str, dict[str, str]],
    batch_refs: Path,
    tmp_path: Path,
    child_processes: list[Any],
) -> None:
    ray_address, stark_env = ray_cluster
    out = tmp_path / "runs"
    args = batch_args(batch_refs, out, "--ray", ray_address, rounds=ROUNDS)
    proc = start_batch(stark_command(*args), stark_env, child_processes)
    run_dir = the_run_dir(out)
    wait_for(lambda: any(len(tree_nodes(t)) >= 2 for t in run_dir.glob("0*")), 300, "two nodes")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    locks = list((run_dir / ".locks").glob("*.lock"))
    # The driver owned its Ray tasks: Ray ends them with it, so none still writes a task.
    wait_for(lambda: all(lock_holder(lock) is None for lock in locks), 120, "its Ray tasks to end")
    before = {t.name: {n["node_id"]: n["code"] for n in tree_nodes(t)} for t in run_dir.glob("0*")}
    counts = {name: verify_counts(run_dir / name) for name in before}
    assert any(len(nodes) < ROUNDS for nodes in before.values()), "nothing left to resume"

    summary = run_stark(["batch", "--resume", str(run_dir), "--ray", ray_address], stark_env)
    assert summary["tasks_pending"] == 0
    for task in summary["tasks"]:
        name = task["task"]
        assert task["error"] is None and task["nodes"] == ROUNDS, task
        after = {n["node_id"]: n["code"] for n in tree_nodes(run_dir / name)}
        assert {i: after[i] for i in before.get(name, {})} == before.get(name, {})
        now = verify_counts(run_dir / name)
        old = counts.get(name, {})
        assert {i: now.get(i, 0) for i in before.get(name, {})} == {
            i: old.get(i, 0) for i in before.get(name, {})
        }


def test_without_ray_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
    batch_refs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if not installed
    code = main(batch_args(batch_refs, tmp_path / "runs", "--ray", "auto"))
    assert code == 2
    assert "pip install 'stark-kernels[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_node_that_does_not_see_the_run_dir_fails_its_task_clearly(tmp_path: Path) -> None:
    (tmp_path / ".ray-probe").write_text("driver-token")
    check_shared_run_dir(str(tmp_path), "driver-token")
    with pytest.raises(RunDirNotShared, match="file system all nodes share"):
        check_shared_run_dir(str(tmp_path), "another-driver")
    with pytest.raises(RunDirNotShared):
        check_shared_run_dir(str(tmp_path / "elsewhere"), "driver-token")
