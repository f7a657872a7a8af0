"""Bad input gets one clear line on stderr and exit status 2, before any search starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from engine.cli import main
from tests.search.conftest import TINY_REFERENCE


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def get_inputs():\n    return []\n", "lacks a top-level class Model"),
        ("class Model:\n    pass\n", "lacks a get_inputs() function"),
        ("class Model(:\n", "syntax error at line 1"),
    ],
)
def test_reference_checked_by_ast(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clean_agent_env: None,
    source: str,
    message: str,
) -> None:
    ref = write(tmp_path, "ref.py", source)
    code, err = run_cli(
        ["optimize", str(ref), "--agent", "offline", "--out", str(tmp_path)], capsys
    )
    assert code == 2
    assert err.startswith("stark optimize: error:") and message in err
    assert len(err.splitlines()) == 1
    assert not any(tmp_path.glob("ref-*")), "no task directory for a bad reference"


def test_missing_reference_and_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    assert run_cli(["optimize", str(tmp_path / "nope.py"), "--agent", "offline"], capsys) == (
        2,
        f"stark optimize: error: reference {tmp_path / 'nope.py'} does not exist",
    )
    ref = write(tmp_path, "ok.py", TINY_REFERENCE)
    for flags, message in [
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--epsilon", "2"], "--epsilon must be within [0, 1]"),
        (["--timeout", "-1"], "--timeout must be positive"),
        (["--profile-timeout", "0"], "--profile-timeout must be positive"),
        (["--resume", str(tmp_path)], "either REFERENCE or --resume"),
    ]:
        code, err = run_cli(["optimize", str(ref), "--agent", "offline", *flags], capsys)
        assert code == 2 and message in err, err
    code, err = run_cli(["optimize", "--resume", str(tmp_path)], capsys)
    assert code == 2 and "not a STARK task directory" in err
    code, err = run_cli(["optimize"], capsys)
    assert code == 2 and "missing REFERENCE" in err


def test_unreachable_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ref = write(tmp_path, "ok.py", TINY_REFERENCE)
    code, err = run_cli(
        [
            "optimize",
            str(ref),
            "--agent",
            "openai",
            "--base-url",
            f"http://127.0.0.1:{port}/v1",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert code == 2
    assert "endpoint unusable" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_reference_that_fails_on_its_own_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    broken = TINY_REFERENCE.replace(
        "return torch.relu(x) * 2.0 + 1.0", "return x @ torch.ones(3, 3)  # wrong shape"
    )
    ref = write(tmp_path, "broken.py", broken)
    code, err = run_cli(
        [
            "optimize",
            str(ref),
            "--agent",
            "offline",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert code == 2
    assert "fails on its own inputs" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_batch_and_debug_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    code, err = run_cli(["batch", str(tmp_path / "missing.py"), "--agent", "offline"], capsys)
    assert code == 2 and "does not exist" in err
    code, err = run_cli(["batch", str(tmp_path), "--agent", "offline"], capsys)
    assert code == 2 and "no reference .py files" in err
    ref = write(tmp_path, "ok.py", TINY_REFERENCE)
    code, err = run_cli(["debug", str(tmp_path / "k.py"), "--reference", str(ref)], capsys)
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("command", ["optimize", "batch"])
@pytest.mark.parametrize(
    ("flag", "value"), [("--atol", "nan"), ("--atol", "-1"), ("--rtol", "inf"), ("--rtol", "x")]
)
def test_bad_tolerances_are_one_line_usage_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clean_agent_env: None,
    command: str,
    flag: str,
    value: str,
) -> None:
    ref = write(tmp_path, "ok.py", TINY_REFERENCE)
    with pytest.raises(SystemExit) as exit_:
        main([command, str(ref), "--agent", "offline", flag, value])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2
    assert len(err.splitlines()) == 1 and f"argument {flag}: " in err, err
    assert "number" in err


def test_a_zero_tolerance_alone_is_accepted_but_not_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_agent_env: None
) -> None:
    """Old code refused `--atol 0` (a legitimate pure-relative allclose)."""
    from engine.cli import build_parser
    from engine.cli.bench import config_from_args
    from engine.cli.common import search_config_from_args, validate_args

    for command in ("optimize", "batch"):
        args = build_parser().parse_args([command, "r.py", "--atol", "0"])
        validate_args(args)
        assert search_config_from_args(args).eval_config.atol == 0.0
        args = build_parser().parse_args([command, "r.py", "--rtol", "0", "--atol", "1e-3"])
        validate_args(args)
        assert search_config_from_args(args).eval_config.rtol == 0.0
    bench_args = build_parser().parse_args(["bench", "r.py", "k.py", "--rtol", "0"])
    assert config_from_args(bench_args).rtol == 0.0
    ref = write(tmp_path, "ok.py", TINY_REFERENCE)
    for argv in (
        ["optimize", str(ref), "--agent", "offline", "--atol", "0", "--rtol", "0"],
        ["bench", str(ref), str(ref), "--atol", "0", "--rtol", "0.0"],
    ):
        code, err = run_cli(argv, capsys)
        assert code == 2 and "--atol and --rtol cannot both be 0" in err, err


def test_tolerances_flow_into_the_eval_config_and_the_summary(tmp_path: Path) -> None:
    from engine.cli import build_parser
    from engine.cli.common import search_config_from_args
    from tests.search.test_remeasure import Agent, Bench, search_for
    from tests.search.test_search_fixes import SEED, correct

    for command in ("optimize", "batch"):
        args = build_parser().parse_args([command, "r.py", "--atol", "1e-3", "--rtol", "2e-2"])
        config = search_config_from_args(args)
        assert (config.eval_config.atol, config.eval_config.rtol) == (1e-3, 2e-2)
        assert config.compile_baseline is True
        no_compile = build_parser().parse_args([command, "r.py", "--no-compile-baseline"])
        assert search_config_from_args(no_compile).compile_baseline is False
        profiled = build_parser().parse_args([command, "r.py", "--profile-timeout", "7"])
        assert search_config_from_args(profiled).eval_config.profile_timeout_s == 7.0
    search, _ = search_for(tmp_path / "task", Agent(SEED, SEED), Bench(correct(1.2)), 1)
    search.config.eval_config.atol, search.config.eval_config.rtol = 1e-3, 2e-2
    summary = search.run()
    assert (summary.atol, summary.rtol) == (1e-3, 2e-2)
