"""Headless Neovim smoke test: its built-in LSP client (`vim.lsp.start_client`,
which is all Debian's 0.7 has) optimizes a reference and applies the best
kernel. Neovim declares neither documentChanges nor change annotations, so
this covers the plain-`changes` path end to end. Skips cleanly without nvim."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NVIM = shutil.which("nvim")
SCRIPT = Path(__file__).with_name("nvim_smoke.lua")


@pytest.mark.skipif(NVIM is None, reason="neovim is not installed (scripts/setup.sh --editor)")
def test_neovim_optimize_and_apply(workspace: Path) -> None:
    result_path = workspace / "nvim_result.json"
    env = {
        **os.environ,
        "STARK_PY": sys.executable,
        "STARK_REF": str(workspace / "tiny_ref.py"),
        "STARK_ROOT": str(workspace),
        "STARK_RESULT": str(result_path),
        "XDG_STATE_HOME": str(workspace / ".nvim-state"),  # keep lsp.log out of $HOME
        "XDG_CACHE_HOME": str(workspace / ".nvim-cache"),
    }
    completed = subprocess.run(
        [NVIM, "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {SCRIPT}"],
        env=env,
        cwd=workspace,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert result_path.exists(), (
        f"nvim wrote no result: {completed.stdout[-2000:]} {completed.stderr[-2000:]}"
    )
    report = json.loads(result_path.read_text())
    assert report["errors"] == [], report
    assert report["states"][0] == "queued" and report["states"][-1] == "done"
    assert report["progress"] > 0  # $/progress reached Neovim's handler
    assert report["applied"]["applied"] is True
    written = workspace / "tiny_ref_stark.py"
    text = written.read_text()
    assert text.startswith("# stark: reference=tiny_ref.py\n") and "class ModelNew" in text
