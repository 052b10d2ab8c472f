"""Tests of what the dashboard lets a visitor do (issue 45): it listens on this machine only unless
told otherwise, and then asks for an access token; a visitor opens only the storages given at
launch (or types one under the folder or on the hosts the launch allows), and the page creates no
storage; no password reaches the page, its downloads or its errors; a hostile study is shown as
plain text, with a message per broken trial. The hostile study in a real browser is in
`test_browser.py`."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from streamlit.testing.v1 import AppTest

from app import guard
from explorer import cli
from search_space import REFERENCES, NetworkConfig
from tests.helpers import make_study

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")


@pytest.fixture
def page(monkeypatch):
    """`page(*argv, **env)`: an AppTest of app/main.py started with `argv` after ``--`` and
    `env`, and nothing from this process's environment."""
    for var in ("EXPLORER_STORAGE", "EXPLORER_STUDY", cli.TOKEN_ENV):
        monkeypatch.delenv(var, raising=False)

    def make(*argv: str, **env: str) -> AppTest:
        monkeypatch.setattr("sys.argv", ["app/main.py", *argv])
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return AppTest.from_file(APP, default_timeout=60)

    return make


def _sent(at: AppTest) -> str:
    """Every element the page sent to the browser (text, widget options and values), as text."""
    out = []

    def walk(node) -> None:
        if getattr(node, "proto", None) is not None:
            out.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(out)


def _unescaped(text: str) -> str:
    """Markdown as a reader sees it: escapes resolved, word joiners gone."""
    return re.sub(r"\\(.)", r"\1", text).replace(guard.WORD_JOINER, "")


# ---------------------------------------------------------------------------------------------
# Where it listens


@pytest.fixture
def served(monkeypatch):
    """Runs `cli.main` with Streamlit's command line replaced; returns what it was given: its
    arguments and the access token its page would read."""
    from streamlit.web import cli as streamlit_cli

    monkeypatch.delenv(cli.TOKEN_ENV, raising=False)
    calls = []

    def fake_main(args, prog_name):
        calls.append((args, os.environ.get(cli.TOKEN_ENV)))
        raise SystemExit(0)

    monkeypatch.setattr(streamlit_cli, "main", fake_main)

    def serve(*argv: str) -> tuple[list[str], str | None]:
        calls.clear()
        assert cli.main(["dashboard", "--no-browser", *argv]) == 0
        [call] = calls
        assert cli.TOKEN_ENV not in os.environ  # set for the server only
        return call

    return serve


@pytest.mark.parametrize("address", [None, "127.0.0.1", "localhost", "::1"])
def test_the_dashboard_listens_on_this_machine_only_by_default(served, capsys, address):
    args, token = served(*(["--address", address] if address else []))
    assert f"--server.address={address or '127.0.0.1'}" in args
    assert token is None and capsys.readouterr().err == ""


def test_another_address_gets_a_token_and_one_line_saying_so(served, capsys):
    args, token = served("--address", "0.0.0.0", "--port", "8600")
    assert "--server.address=0.0.0.0" in args and token and len(token) >= 20
    (line,) = capsys.readouterr().err.splitlines()
    assert "reachable by anyone on that network" in line
    assert f":8600/?token={token}" in line and "docs/guide.md" in line
    # a token of one's own is used, and not printed
    args, token = served("--address", "192.0.2.2", "--token", "chosen-token")
    assert token == "chosen-token"
    (line,) = capsys.readouterr().err.splitlines()
    assert "http://192.0.2.2:8501/?token=<your token>" in line and "chosen-token" not in line


def _own_address() -> str | None:
    """A non-loopback IPv4 address of this machine (the one it would route outwards from; a
    UDP socket's connect sends nothing), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.mark.slow
def test_the_real_server_refuses_connections_to_other_addresses(tmp_path):
    """`inception-explorer dashboard` with no --address, served for real: it answers on
    127.0.0.1 and refuses a connection to this machine's network address, where a socket
    listening on every interface (the control) accepts one."""
    own = _own_address()
    if own is None:
        pytest.skip("this machine has no network address besides loopback")
    with socket.socket() as control:
        control.bind(("0.0.0.0", 0))
        control.listen()
        socket.create_connection((own, control.getsockname()[1]), timeout=5).close()
    port = _free_port()
    log = tmp_path / "dashboard.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    env.pop(cli.TOKEN_ENV, None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "explorer", "dashboard", "--port", str(port), "--no-browser"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((own, port), timeout=5).close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# The access token


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    storage = str(tmp_path_factory.mktemp("security") / "explorer.journal")
    make_study(storage, "demo", n_search=3, seed=0, weights=False)
    return storage


def test_with_a_token_the_page_shows_nothing_until_it_is_given(page, demo):
    env = {cli.TOKEN_ENV: "s3cret-token"}
    at = page("--storage", demo, **env).run()
    assert not at.exception and not at.selectbox and not at.get("plotly_chart")
    assert demo not in _sent(at) and "s3cret-token" not in _sent(at)
    at.text_input(key="token_input").input("wrong").run()
    assert "not this dashboard's access token" in at.error[0].value and not at.selectbox
    at.text_input(key="token_input").input("s3cret-token").run()
    assert not at.exception and at.title[0].value == "demo" and at.get("plotly_chart")
    # the link printed at launch carries it
    at = page("--storage", demo, **env)
    at.query_params["token"] = "s3cret-token"
    assert at.run().title[0].value == "demo"


# ---------------------------------------------------------------------------------------------
# What a visitor opens


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://me:s3cret@db:5432/x", "postgresql://me:***@db:5432/x"),
        ("postgresql://me:s3c@ret@db/x", "postgresql://me:***@db/x"),
        (
            "postgresql+psycopg://db/x?password=s3cret&sslmode=require",
            "postgresql+psycopg://db/x?…",
        ),
        ("mysql://me@db/x", "mysql://me@db/x"),
        ("sqlite:////data/s3cret.db", "sqlite:////data/s3cret.db"),
        ("studies/explorer.journal", "studies/explorer.journal"),
    ],
)
def test_a_storage_is_shown_without_its_password_or_options(url, shown):
    assert guard.shown(url) == shown


def test_launch_arguments_and_environment():
    env = {"EXPLORER_STORAGE": "env.journal", "EXPLORER_STUDY": "s", cli.TOKEN_ENV: "t"}
    assert guard.launch_from_args([], env) == guard.Launch(("env.journal",), "s", token="t")
    launch = guard.launch_from_args(
        ["--storage", "a.journal", "--storage", "b.journal", "--allow-host", "DB", "--study", "x"],
        {},
    )
    assert launch.storages == ("a.journal", "b.journal") and launch.study == "x"
    assert launch.allow_hosts == ("db",) and launch.allow_dir is None and launch.typing_allowed
    assert not guard.launch_from_args(["--storage", "a.journal"], {}).typing_allowed


@pytest.fixture
def allowed(tmp_path) -> guard.Launch:
    """A launch that lets visitors type files under tmp_path/allowed and URLs on db.example."""
    (tmp_path / "allowed" / "sub").mkdir(parents=True)
    (tmp_path / "allowed" / "escape").symlink_to(tmp_path)
    return guard.Launch(
        ("a.journal",), allow_dir=(tmp_path / "allowed").resolve(), allow_hosts=("db.example",)
    )


@pytest.mark.parametrize(
    "typed, opened",
    [
        ("sub/x.journal", "{allowed}/sub/x.journal"),
        ("{allowed}/x.journal", "{allowed}/x.journal"),
        ("sqlite:///x.db", "sqlite:///{allowed}/x.db"),
        ("postgresql://me:pw@db.example:5432/nas", "postgresql://me:pw@db.example:5432/nas"),
    ],
)
def test_a_typed_storage_opens_under_the_allowed_folder_or_hosts(allowed, typed, opened):
    root = str(allowed.allow_dir)
    assert guard.typed_storage(typed.format(allowed=root), allowed) == opened.format(allowed=root)


@pytest.mark.parametrize(
    "typed",
    [
        "../outside.journal",
        "sub/../../outside.journal",
        "/etc/passwd",
        "escape/outside.journal",  # a link out of the folder
        "",
        "sqlite:////etc/x.db",
        "sqlite:///../x.db",
        "sqlite:///x.db?mode=rwc",
        "postgresql://me@elsewhere.example/nas",
        "postgresql://me@db.example/nas?host=elsewhere.example",
        "postgresql://me@/nas",  # a local socket
        "postgresql://me@db.example.elsewhere/nas",
        "ftp://db.example/nas",
    ],
)
def test_a_typed_storage_outside_them_is_refused(allowed, typed):
    with pytest.raises(guard.Refused):
        guard.typed_storage(typed, allowed)


def test_without_the_launch_flags_nothing_typed_is_opened(allowed):
    with pytest.raises(guard.Refused, match="only the storages it was started with"):
        guard.typed_storage("sub/x.journal", guard.Launch(("a.journal",)))


def test_a_visitor_creates_opens_or_probes_nothing_outside_the_launch(page, demo, tmp_path):
    """Through the page's own text box: refused storages are never touched, and neither a
    missing one in the allowed folder nor a database elsewhere is created or connected to."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "notes.txt").write_text("TOP-SECRET-LINE\n" * 3)
    (tmp_path / "secret.txt").write_text("TOP-SECRET-LINE\n")
    with socket.socket() as forbidden:  # a database server the launch did not name
        forbidden.bind(("127.0.0.1", 0))
        forbidden.listen()
        forbidden.settimeout(0.5)
        db_port = forbidden.getsockname()[1]
        before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        at = page("--storage", demo, "--allow-dir", str(allowed), "--allow-host", "db.invalid")
        at.run()
        for typed, says in [
            (f"postgresql://me:pw@127.0.0.1:{db_port}/nas", "must be on a host given at launch"),
            (f"sqlite:///{tmp_path}/created.db", "must be under"),
            ("../secret.txt", "must be under"),
            ("/etc/passwd", "must be under"),
            ("new.journal", "There is no study storage"),
            ("sqlite:///new.db", "There is no study storage"),
            ("notes.txt", "Cannot read the study storage"),
        ]:
            at.text_input(key="typed_storage").input(typed).run()
            assert not at.exception
            page_text = _unescaped(_sent(at))
            assert says in page_text, typed
            assert "TOP-SECRET-LINE" not in page_text and "root:" not in page_text
        with pytest.raises(TimeoutError):
            forbidden.accept()  # nobody connected
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    at.text_input(key="typed_storage").input("").run()  # back to the storage given at launch
    assert at.title[0].value == "demo"


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_storage_given_at_launch_that_is_not_there_is_not_created(page, tmp_path, kind):
    url = {
        "journal": str(tmp_path / "studies" / "explorer.journal"),
        "sqlite": f"sqlite:///{tmp_path}/studies.db",
    }[kind]
    at = page("--storage", url).run()
    assert not at.exception and not at.error
    assert "There is no study storage" in at.info[0].value
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_an_empty_database_given_at_launch_gets_no_tables(page, postgres_url):
    import psycopg

    at = page("--storage", postgres_url).run()
    assert not at.exception and "There is no study storage" in at.info[0].value
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        ).fetchone()[0]
    assert tables == 0


# ---------------------------------------------------------------------------------------------
# No password on the page

PASSWORD = "Pa55-issue-45"


@pytest.fixture
def downloads(monkeypatch) -> list[bytes]:
    """Every file the page offers for download, as bytes."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files: list[bytes] = []
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, path_or_data, mimetype, kind, filename=None):
        files.append(path_or_data if isinstance(path_or_data, bytes) else b"")
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    return files


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://explorer:{PASSWORD}@127.0.0.1:1/studies",
        f"postgresql://127.0.0.1:1/studies?user=explorer&password={PASSWORD}",
    ],
)
def test_an_unreadable_storage_with_a_password_keeps_it_off_the_page(page, url):
    at = page("--storage", url).run()
    assert not at.exception and "Cannot read the study storage" in at.error[0].value
    assert PASSWORD not in _sent(at)


@pytest.mark.postgres
def test_a_password_given_at_launch_appears_nowhere_on_the_page(page, postgres_url, downloads):
    # the test server trusts local connections, so any password opens it
    url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
    assert PASSWORD in url
    make_study(url, "demo", n_search=3, seed=0, weights=False)
    at = page("--storage", url, "--study", "demo").run()
    assert not at.exception and at.title[0].value == "demo"
    seen = [_sent(at)]
    for view in ("Search progress", "Trials", "Trial details", "Compare", "Ablation"):
        at.session_state["view"] = view
        seen.append(_sent(at.run()))
        assert not at.exception and not at.error, view
    assert "postgres:***@" in "".join(seen)  # the storage is named, without its password
    assert len(downloads) >= 2  # the trials table and the design's code
    assert not [s for s in seen if PASSWORD in s]
    assert not [f for f in downloads if PASSWORD.encode() in f]


# ---------------------------------------------------------------------------------------------
# A hostile study

HOSTILE_STUDY = "<script>alert('study')</script>"
HOSTILE_REFERENCE = "<script>alert('reference')</script>"
MARKUP = "<img src=x onerror=alert('trial')> [a link](http://example.invalid) **bold** $x$"


def make_hostile_study(storage: str) -> dict[int, str]:
    """Study `HOSTILE_STUDY`: v1, v2 and four designs as a search stores them, then trials whose
    attributes are malformed, enormous or hostile, and settings that do not parse. Returns the
    numbers of the broken trials with what the page must say about each."""
    study = make_study(storage, HOSTILE_STUDY, n_search=4, seed=7, weights=False, failed=0)
    v1 = NetworkConfig(block=REFERENCES["v1"]).to_dict()
    says = {}

    def add(note: str | None, state=optuna.trial.TrialState.COMPLETE, **attrs) -> None:
        values = [0.5, 1000] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(state=state, values=values, user_attrs=attrs))
        if note is not None:
            says[len(study.trials) - 1] = note

    add(None, reference=HOSTILE_REFERENCE, network=v1, params=70_000, val_acc=0.7)
    huge = {**v1, "block": {**v1["block"], "ch1x1": 10**6}}  # a design of 10^6 channels
    add("ch1x1 must be an integer in 0..8192, got 1000000", network=huge, params=10**12)
    add("network config must be a mapping, got str", network="{not json", params=5)
    add("unknown network config field(s): <script>", network={**v1, "<script>x</script>": 1})
    add(
        "<img src=x onerror=alert('trial')>",
        state=optuna.trial.TrialState.FAIL,
        network=v1,
        params=60_000,
        curves={"epoch": [1], "val_acc": [0.4]},
        fail_reason=MARKUP + "x" * 100_000,
    )
    add(
        None,
        network=v1,
        params="many",
        val_acc="high",
        curves={"epoch": [1, "b"], "val_acc": "zzz"},
        promotion={"rank": "first", "among": 3},
        big=list(range(100_000)),
    )
    study.set_user_attr("config", {"constraints": [1, 2]})
    return says


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[str, dict[int, str]]:
    storage = str(tmp_path_factory.mktemp("hostile") / "explorer.journal")
    return storage, make_hostile_study(storage)


def _markup_outside_code(at: AppTest) -> list[str]:
    """Texts of Markdown elements that would render markup: an unescaped ``<``, link or bare
    URL (which GitHub-flavoured Markdown makes a link)."""
    kinds = ("title", "markdown", "caption", "info", "warning", "error")
    texts = [e.value for kind in kinds for e in getattr(at, kind)]
    bare = [re.sub(r"(`+).*?\1", "", t) for t in texts]  # code spans show their text as is
    return [t for t in bare if re.search(r"(?<!\\)<|(?<!\\)\]\(|https?://|www\.|\w@", t)]


def test_a_hostile_study_is_shown_as_text_with_a_message_per_broken_trial(page, hostile):
    storage, says = hostile
    at = page("--storage", storage).run()
    assert not at.exception and not at.error
    assert _unescaped(at.title[0].value) == HOSTILE_STUDY
    assert "shown without its settings" in at.warning[0].value
    pareto = json.loads(at.get("plotly_chart")[0].proto.spec)
    names = [t["name"] for t in pareto["data"]]
    # the rest is drawn, the hostile reference by its name as text
    assert {"complete", "failed", "v1", "v2", "&lt;script>alert('reference')&lt;/script>"} <= set(
        names
    )
    assert "<script" not in json.dumps(pareto)
    assert not _markup_outside_code(at)

    at.session_state["view"] = "Trials"
    notes = dict(at.run().dataframe[0].value[["trial", "note"]].values.tolist())
    for number, note in says.items():
        assert note in notes[number], number
    assert max(len(n) for n in notes.values() if isinstance(n, str)) <= guard.TEXT_LIMIT
    for number in range(len(notes)):
        at.session_state["view"] = "Trial details"
        at.session_state["detail_trial"] = number
        at.run()
        assert not at.exception and not at.error, number
        assert not _markup_outside_code(at), number
        if number in says:
            warning = _unescaped(at.warning[-1].value)
            assert warning.startswith(f"#{number}: ") and says[number] in warning
            assert len(warning) <= guard.TEXT_LIMIT + 10
    for view in ("Search progress", "Compare", "Ablation"):
        at.session_state["view"] = view
        at.run()
        assert not at.exception and not at.error, view
        assert not _markup_outside_code(at), view
