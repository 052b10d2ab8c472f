"""Tests of the console command (`inception-explorer`, `python -m explorer`): help at each level,
exit codes, delegation to the module entry points, `info`, the dashboard's streamlit arguments
and the spelling of next commands. Nothing here trains or serves."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import optuna
import pytest
import torch

from explorer import cli, usage
from explorer.store import open_storage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """A fresh current folder and no storage, study or data chosen by the environment."""
    for var in ("EXPLORER_STORAGE", "EXPLORER_STUDY", "EXPLORER_DATA", "EXPLORER_ARTIFACTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def _one_error_line(err: str, prog: str = usage.PROG) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {usage.PROG} ")
    for name in cli.COMMANDS:
        assert f"\n  {name} " in out


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("search", "--trials"),
        ("evaluate", "--pareto"),
        ("export", "--best"),
        ("dashboard", "--port"),
        ("info", "--help"),
    ],
)
def test_every_command_has_help(capsys, command, flag):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and flag in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "a command is needed: search, evaluate, export, ablate, dashboard, info"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["dashboard", "--port", "0"], "must be a port number (1-65535), got '0'"),
        (["dashboard", "--port", "many"], "got 'many'"),
        (["dashboard", "--colour", "red"], "unrecognized arguments: --colour red"),
        (["info", "--verbose"], "unrecognized arguments: --verbose"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, says):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert says in _one_error_line(captured.err)


def test_python_dash_m_explorer_exits_2_in_its_own_process():
    proc = subprocess.run(
        [sys.executable, "-m", "explorer", "bogus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "invalid choice: 'bogus'" in _one_error_line(proc.stderr, usage.MODULE_PROG)


@pytest.mark.parametrize("command", sorted(cli.DELEGATED))
def test_delegated_commands_hand_over_the_rest_of_the_arguments(monkeypatch, command):
    seen = []
    fake = types.ModuleType(cli.DELEGATED[command])
    fake.main = lambda argv: seen.append(list(argv)) or 7
    monkeypatch.setitem(sys.modules, cli.DELEGATED[command], fake)
    assert cli.main([command, "--study", "demo", "--help"]) == 7
    assert seen == [["--study", "demo", "--help"]]


def test_a_delegated_command_keeps_its_exit_2(capsys):
    assert cli.main(["search", "--trials", "many"]) == 2
    assert "--trials" in _one_error_line(capsys.readouterr().err, "python -m explorer.search")


def test_info_says_space_budgets_places_and_device(capsys, tmp_path):
    storage = str(tmp_path / "studies" / "explorer.journal")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "search space 'inception-block'" in out and "ch3x3_reduce" in out
    for budget in ("smoke", "quick", "standard"):
        assert f"\n  {budget} " in out
    assert f"studies: {Path(storage).resolve()} (default, not created yet" in out
    assert f"weights: {(tmp_path / 'studies' / 'artifacts').resolve()}" in out
    assert "$EXPLORER_DATA (unset)" in out and "\n  fashion-mnist " in out
    assert "\ndevice: " in out
    one = "standard" if torch.cuda.is_available() else "quick"  # the default is one budget
    assert f"default budget: {one} (one budget); with --rungs 3, the top rung is " in out
    from explorer.search import VERIFY_FACTOR

    assert f"claims against v1/v2: retrained at {one}x{VERIFY_FACTOR} before" in out

    optuna.create_study(storage=open_storage(storage), study_name="demo")
    cli.main(["info"])
    assert "(default, 1 studies: demo)" in capsys.readouterr().out


def test_info_reads_the_environment(capsys, monkeypatch, tiny_fmnist, tmp_path):
    monkeypatch.setenv("EXPLORER_DATA", str(tiny_fmnist))
    monkeypatch.setenv("EXPLORER_STORAGE", "postgresql://me:secret@db:5432/nas")
    monkeypatch.setenv("EXPLORER_ARTIFACTS", str(tmp_path / "weights"))
    cli.main(["info"])
    out = capsys.readouterr().out
    assert "studies: postgresql://me:***@db:5432/nas ($EXPLORER_STORAGE)" in out
    assert "secret" not in out
    assert f"weights: {(tmp_path / 'weights').resolve()}" in out
    assert f"fashion-mnist  {tiny_fmnist}" in out


def test_dashboard_page_is_the_streamlit_page():
    page = cli.dashboard_page()
    assert page.name == "main.py" and "st.set_page_config" in page.read_text()


def test_streamlit_arguments_carry_the_options_and_the_page_arguments():
    page = Path("/x/main.py")
    assert cli.streamlit_args(page) == ["run", "/x/main.py", "--client.toolbarMode=minimal"]
    args = cli.streamlit_args(page, "s.journal", "demo", 8600, "0.0.0.0", browser=False)
    assert args[:2] == ["run", "/x/main.py"]
    flags = args[2 : args.index("--")]
    assert sorted(flags) == sorted(
        [
            "--client.toolbarMode=minimal",
            "--server.port=8600",
            "--server.address=0.0.0.0",
            "--server.headless=true",
        ]
    )
    assert args[args.index("--") + 1 :] == ["--storage", "s.journal", "--study", "demo"]


def test_dashboard_runs_streamlit_on_the_page(monkeypatch):
    from streamlit.web import cli as streamlit_cli

    calls = []

    def fake_main(args, prog_name):
        calls.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(streamlit_cli, "main", fake_main)
    checkout_page = ROOT / "app" / "main.py"

    def check_page(page: str) -> None:
        """The page is this checkout's app/main.py, or the installed copy of it."""
        path = Path(page)
        assert path.is_absolute() and path.is_file() and path.name == "main.py", page
        assert (
            path.resolve() == checkout_page.resolve()
            or path.read_bytes() == checkout_page.read_bytes()
        ), f"{page} is neither {checkout_page} nor a copy of it"

    argv = ["dashboard", "--storage", "s.journal", "--study", "demo", "--port", "8600"]
    assert cli.main([*argv, "--address", "0.0.0.0", "--no-browser"]) == 0
    [args] = calls
    assert args[0] == "run"
    check_page(args[1])
    assert "--" in args, args
    assert sorted(args[2 : args.index("--")]) == sorted(
        [
            "--client.toolbarMode=minimal",
            "--server.port=8600",
            "--server.address=0.0.0.0",
            "--server.headless=true",
        ]
    )
    page_args = args[args.index("--") + 1 :]
    assert len(page_args) == 4 and dict(zip(page_args[::2], page_args[1::2])) == {
        "--storage": "s.journal",
        "--study": "demo",
    }, page_args

    # nothing chosen: the page and the shipped option only, no page arguments
    calls.clear()
    assert cli.main(["dashboard"]) == 0
    [args] = calls
    assert args[0] == "run" and args[2:] == [
        "--client.toolbarMode=minimal",
        "--server.address=127.0.0.1",
    ], args  # loopback unless --address says otherwise
    check_page(args[1])


@pytest.mark.parametrize(
    ("found", "prefix"),
    [
        (None, "python -m explorer"),
        (str(Path(sysconfig.get_path("scripts")) / usage.PROG), "inception-explorer"),
        ("/elsewhere/bin/inception-explorer", "python -m explorer"),  # another install's
    ],
)
def test_command_prefix_is_the_console_script_only_when_it_is_this_install(
    monkeypatch, found, prefix
):
    monkeypatch.setattr(usage.shutil, "which", lambda name: found)
    assert usage.command_prefix() == prefix


def test_next_commands_are_quoted_and_redacted(monkeypatch):
    monkeypatch.setattr(usage, "command_prefix", lambda: "inception-explorer")
    assert usage.command("export", "--study", "a b", "--best") == (
        "inception-explorer export --study 'a b' --best"
    )
