"""Atomic writes: readers see an old or a complete new file, a kill leaves no half file."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from engine import atomic_io
from engine.atomic_io import (
    TMP_PREFIX,
    TMP_SUFFIX,
    append_line,
    atomic_write_text,
    remove_stale_tmp_files,
)
from engine.trace import ActionType, Trace


def _tmp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def test_no_tmp_files_left_after_records(tmp_path: Path) -> None:
    trace = Trace("op", "1", tmp_path)
    for action in ActionType:
        if action is not ActionType.VERIFY:
            trace.insert_designer_or_coder_record("r", "p", "x", action)
    trace.insert_tester_record(
        "{}", "log", "", reference_src="r", candidate_src="c", eval_config={"device": "cpu"}
    )
    trace.insert_conductor_record("CheckCoder", "p", "r")
    assert _tmp_files(tmp_path) == []


def test_failed_replace_keeps_old_file_and_removes_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old complete content")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    # the helper's own bound copy: it deliberately ignores a later patch of os.replace
    monkeypatch.setattr(atomic_io, "_os_replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(target, "new content")
    assert target.read_text() == "old complete content"
    assert _tmp_files(tmp_path) == []


def test_patching_os_after_import_cannot_redirect_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark worker writes its verdict through this helper after candidate code ran;
    a candidate that replaced os.replace/os.write must not change what reaches the file."""
    target = tmp_path / "result.json"
    monkeypatch.setattr(os, "replace", lambda src, dst: None)
    monkeypatch.setattr(os, "write", lambda fd, data: len(data))
    atomic_write_text(target, "the real verdict", mode=0o600, durable=False)
    assert target.read_text() == "the real verdict"
    assert target.stat().st_mode & 0o777 == 0o600
    assert _tmp_files(tmp_path) == []


def test_a_stale_temporary_name_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead writer with our pid (pid reuse) may have left the next temporary name behind."""
    monkeypatch.setattr(atomic_io, "_sequence", itertools.count(7))
    taken = tmp_path / f"{TMP_PREFIX}{os.getpid()}-7{TMP_SUFFIX}"
    taken.write_text("leftover")
    atomic_write_text(tmp_path / "f.txt", "content")
    assert (tmp_path / "f.txt").read_text() == "content"
    assert taken.read_text() == "leftover"


def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "f.txt"
    atomic_write_text(target, "x")
    assert target.read_text() == "x"


def test_concurrent_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    versions = [f"BEGIN{i}\n" + chr(ord("a") + i) * 2_000_000 + f"\nEND{i}\n" for i in range(5)]
    atomic_write_text(target, versions[0])
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(target.read_text())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in versions * 2:
            atomic_write_text(target, version)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert seen and all(text in versions for text in seen)


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from engine.trace import ActionType, Trace

    trace = Trace("op", "1", Path(sys.argv[1]), max_bytes=16 * 1024 * 1024)
    print("ready", flush=True)
    for i in range(500):
        body = f"BEGIN{i}\\n" + "x" * 1_000_000 + f"\\nEND{i}\\n"
        trace.insert_designer_or_coder_record(body, body, body, ActionType.DO_CODER)
    """
)


def test_killed_writer_leaves_only_complete_files(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((tmp_path / "op").glob("I1_S*"))) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    written = sorted((tmp_path / "op").glob("I1_S*_prompt.txt"))
    assert written, "the writer should have recorded something before the kill"
    for path in (tmp_path / "op").glob("I1_S*.txt"):
        text = path.read_text()
        assert text.startswith("BEGIN") and text.endswith("END" + text[5 : text.index("\n")] + "\n")
    # resume: stale temporary files of the dead writer are removed, numbering continues
    resumed = Trace("op", "1", tmp_path)
    assert _tmp_files(tmp_path) == []
    last = max(int(p.name.split("_S")[1].split("_")[0]) for p in written)
    assert resumed.current_step >= last
    taken = {p.name.split("_")[1] for p in (tmp_path / "op").glob("I1_S*")}
    step = resumed.insert_designer_or_coder_record("r", "p", "", "DO_CODER")
    assert step > last and f"S{step:02d}" not in taken


def test_stale_tmp_of_live_process_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / f".stark-tmp-{os.getpid()}-abc.tmp"
    dead = tmp_path / ".stark-tmp-999999999-abc.tmp"
    foreign = tmp_path / "user-file.tmp"
    for path in (mine, dead, foreign):
        path.write_text("x")
    assert remove_stale_tmp_files(tmp_path) == [dead]
    assert mine.exists() and foreign.exists()


def test_append_line_repairs_a_torn_last_line(tmp_path: Path) -> None:
    index = tmp_path / "index.jsonl"
    index.write_text('{"step": 1}\n{"step": 2, "trunc')  # a writer killed mid-line
    append_line(index, '{"step": 3}')
    assert index.read_text().splitlines()[-1] == '{"step": 3}'
    with pytest.raises(ValueError):
        append_line(index, "two\nlines")


def test_verify_folder_appears_complete_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = Trace("op", "1", tmp_path)
    real_write = Trace._write
    calls = {"n": 0}

    def failing_write(self: Trace, path: Path, text: str, **kwargs: object) -> Path:
        calls["n"] += 1
        if calls["n"] == 3:  # the verify script, after both sources
            raise OSError("disk full")
        return real_write(self, path, text, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Trace, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        trace.insert_tester_record(
            "{}", "log", "", reference_src="r", candidate_src="c", eval_config={"device": "cpu"}
        )
    assert not (tmp_path / "op" / "I1_S01_verify").exists()
    assert _tmp_files(tmp_path) == []
    monkeypatch.setattr(Trace, "_write", real_write)
    # the failed step is not reused, and the next record is whole
    assert Trace("op", "1", tmp_path).insert_designer_or_coder_record("r", "p", "", "DO_CODER") >= 1


def test_stale_tmp_folder_of_dead_writer_is_removed(tmp_path: Path) -> None:
    stale = tmp_path / "op" / ".stark-tmp-999999999-verify.tmp"
    stale.mkdir(parents=True)
    (stale / "op_torch.py").write_text("half a folder")
    Trace("op", "1", tmp_path)
    assert not stale.exists()
