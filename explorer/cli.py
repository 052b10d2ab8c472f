"""`inception-explorer` (or `python -m explorer`): one command for the whole tool.

``search``, ``evaluate`` and ``export`` hand their arguments to the module entry points
(`explorer.search`, `explorer.evaluate`, `explorer.export`), which stay runnable on their own as
``python -m explorer.search`` and so on. ``dashboard`` serves the Streamlit page from wherever the
package is installed, and ``info`` prints what this install sees: the search space, the budgets,
where studies, weights and data are found, and the device.

`explorer.usage.command` spells the commands to run next, as this
install is started.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import ipaddress
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import optuna
import torch

from search_space import DEFAULT_SPACE

from .search import DEFAULT_ETA, DEFAULT_RUNGS, SearchSettings, new_config
from .store import (
    STORAGE_HELP,
    STUDY_HELP,
    StorageError,
    StudyConfig,
    artifact_dir,
    choose_study,
    default_storage,
    is_companion_study,
    is_journal,
    open_storage,
    redact,
    study_line,
    study_names,
)
from .training import (
    BUDGETS,
    DATASETS,
    ENV_VAR,
    LONG_FACTOR,
    DataError,
    cache_dir,
    default_budget,
    find_dataset,
    resolve_device,
)
from .usage import PROG, Parser, UsageError, command_prefix

# Subcommands that are a package's `main(argv)`, looked up by name when run (the name and
# `main(argv)` are the contract).
DELEGATED = {
    "search": "explorer.search",
    "evaluate": "explorer.evaluate",
    "export": "explorer.export",
    "ablate": "explorer.ablate",
}

COMMANDS = {  # name -> what it does, for --help
    "search": "run or resume a search: train designs and record them in a study",
    "evaluate": "retrain a study's best designs longer, over several seeds",
    "export": "write designs of a study as standalone PyTorch code",
    "ablate": "why v2 beats v1 (or a winner wins): one change at a time, paired seeds",
    "dashboard": "serve the Streamlit dashboard on a study",
    "info": "the search space, the budgets, where studies, weights and data are found, the device",
}

# Streamlit options every dashboard start gets: a viewer needs no deploy or developer menu.
STREAMLIT_OPTIONS = {"client.toolbarMode": "minimal"}
# Where the dashboard listens unless --address says otherwise: this machine only.
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8501  # Streamlit's
# The access token the page asks for (`app.guard`); the dashboard command sets it for its server.
TOKEN_ENV = "EXPLORER_DASHBOARD_TOKEN"


# --------------------------------------------------------------------------------------------
# Spelling the next commands


# --------------------------------------------------------------------------------------------
# dashboard


def dashboard_page() -> Path:
    """The dashboard's page file: ``explorer/dashboard/main.py`` where the package is installed
    (editable installs map it to the checkout's ``app/``), else ``app/main.py`` of this checkout."""
    candidates = []
    try:
        spec = importlib.util.find_spec("explorer.dashboard")
    except ImportError:
        spec = None
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).with_name("main.py"))
    candidates.append(Path(__file__).resolve().parents[1] / "app" / "main.py")
    for page in candidates:
        if page.is_file():
            return page
    raise FileNotFoundError(
        f"the dashboard page is missing (looked for {', '.join(map(str, candidates))}); "
        "reinstall the package"
    )


def streamlit_args(
    page: Path,
    storage: str | Sequence[str] | None = None,
    study: str | None = None,
    port: int | None = None,
    address: str | None = None,
    browser: bool = True,
    allow_dir: str | None = None,
    allow_hosts: Sequence[str] = (),
) -> list[str]:
    """The arguments of ``streamlit`` that serve `page` with the shipped options; `storage` is
    one storage or several, the page's choices."""
    options: dict[str, object] = dict(STREAMLIT_OPTIONS)
    if port is not None:
        options["server.port"] = port
    if address is not None:
        options["server.address"] = address
    if not browser:
        options["server.headless"] = "true"
    args = ["run", str(page), *(f"--{k}={v}" for k, v in options.items())]
    page_args = []
    for one in [storage] if isinstance(storage, str) else storage or ():
        page_args += ["--storage", one]
    if study is not None:
        page_args += ["--study", study]
    if allow_dir is not None:
        page_args += ["--allow-dir", allow_dir]
    for host in allow_hosts:
        page_args += ["--allow-host", host]
    return args + (["--", *page_args] if page_args else [])


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {text!r}")
    return value


def is_loopback(address: str) -> bool:
    """Whether a server listening on `address` is reachable from this machine only."""
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name, or "" (every interface)
        return False


def exposure_line(address: str, port: int, token: str, generated: bool) -> str:
    """The one line the dashboard prints when it listens beyond this machine."""
    host = address if address not in ("", "0.0.0.0", "::") else socket.gethostname()
    url = f"http://{host}:{port}/?token={token if generated else '<your token>'}"
    return (
        f"{PROG}: the dashboard listens on {address or 'every interface'}, reachable by anyone on "
        f"that network: the page asks for an access token; open {url} (choose the token with "
        f"--token or ${TOKEN_ENV}; for a team, serve on {LOOPBACK} behind a proxy that signs "
        'people in over HTTPS, see docs/guide.md, "The dashboard for a team")'
    )


def dashboard_study(
    storages: Sequence[str] | None, study: str | None
) -> tuple[str | None, str | None]:
    """(the study the page opens, the line saying which when not given), chosen as every
    subcommand chooses (`choose_study`) in the first storage; a storage not made yet, unreadable
    or empty leaves it to the page, which waits for a search or says why."""
    url = (storages or [None])[0] or default_storage()
    if is_journal(url) and not Path(url).expanduser().is_file():
        return study, None
    try:
        names = study_names(url)
    except StorageError:
        return study, None
    if not names:
        return study, None
    name, why = choose_study(names, study)
    return name, None if why is None else study_line(name, why)


def _dashboard(ns: argparse.Namespace) -> int:
    try:
        # Here, not at the top: 0.4 s more for every other subcommand (Xeon, 2026-12-02).
        from streamlit.web import cli as streamlit_cli
    except ImportError as exc:
        raise UsageError(f"the dashboard needs streamlit ({exc}); pip install streamlit") from None
    token = ns.token or os.environ.get(TOKEN_ENV) or None
    study, chosen = dashboard_study(ns.storage, ns.study)
    if chosen is not None:
        print(chosen, file=sys.stderr)
    if not is_loopback(ns.address):
        generated = token is None
        token = token or secrets.token_urlsafe(18)
        print(exposure_line(ns.address, ns.port or DEFAULT_PORT, token, generated), file=sys.stderr)
    args = streamlit_args(
        dashboard_page(), ns.storage, study, ns.port, ns.address, ns.browser, ns.allow_dir,
        ns.allow_host or (),
    )  # fmt: skip
    before = os.environ.get(TOKEN_ENV)
    if token is not None:  # the page, served by this process, reads it there
        os.environ[TOKEN_ENV] = token
    try:  # streamlit's own command line, in this process, so that stopping us stops the server
        streamlit_cli.main(args=args, prog_name="streamlit")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if before is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = before
    return 0


# --------------------------------------------------------------------------------------------
# info


def _images(n: int | None) -> str:
    return "all" if n is None else f"{n:,}"


def _budget_line(name: str, c) -> str:
    return (
        f"  {name:<9} {c.optimizer} lr {c.lr:g}, batch {c.batch_size}, {c.epochs} epochs of "
        f"{_images(c.train_images)} training images, validated on {_images(c.val_images)} "
        f"({_images(c.final_val_images)} after the last)" + (", augmented" if c.augment else "")
    )


def info_text() -> str:
    """What ``info`` prints: the install, the search space, the budgets, where studies, weights
    and data are found (from the current folder and environment), and the device."""

    try:
        page = str(dashboard_page())
    except FileNotFoundError as exc:
        page = str(exc)
    lines = [
        f"{PROG} {_version()}: package {Path(__file__).resolve().parent}",
        f"  command: {command_prefix()}; dashboard page: {page}",
        "",
        DEFAULT_SPACE.describe(),
        "",
        "budgets (--budget; images per epoch):",
        *(_budget_line(name, c) for name, c in BUDGETS.items()),
        "",
    ]

    storage = default_storage()
    source = "$EXPLORER_STORAGE" if os.environ.get("EXPLORER_STORAGE") else "default"
    if is_journal(storage):
        path = Path(storage).expanduser().resolve()
        networks: list[str] = []
        if path.is_file():
            try:
                names = study_names(storage)
                held = f"{len(names)} studies" + (f": {', '.join(names)}" if names else "")
                networks = _study_networks(storage)
            except Exception as exc:  # an unreadable journal is worth a line, not a traceback
                held = (
                    f"unreadable: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                )
        else:
            held = "not created yet; the first search makes it"
        lines.append(f"studies: {path} ({source}, {held})")
        lines += networks
    else:
        lines.append(f"studies: {redact(storage)} ({source})")
    default = new_config(SearchSettings(), "quick").network_text()
    lines.append(f"network of a new study: {default} (--stages, --width, --stem, --per-stage)")
    lines.append(f"weights: {artifact_dir().expanduser().resolve()} ($EXPLORER_ARTIFACTS to move)")

    env = os.environ.get(ENV_VAR)
    lines.append(
        f"data: --data-dir, then ${ENV_VAR} ({env or 'unset'}), system packages, the cache "
        f"{cache_dir()} (downloads go there)"
    )
    for name in DATASETS:
        try:
            where = str(find_dataset(name, download=False))
        except DataError:
            where = "not found (downloaded on first use, if the network allows)"
        lines.append(f"  {name:<14} {where}")

    lines.append("")
    device = resolve_device("auto")
    detail = f"torch {torch.__version__}"
    if device.type == "cuda":
        detail += f", {torch.cuda.device_count()} x {torch.cuda.get_device_name(device)}"
    else:
        detail += f", {torch.get_num_threads()} CPU threads"
    top = default_budget(device, DEFAULT_RUNGS, DEFAULT_ETA)
    three = default_budget(device, 3, DEFAULT_ETA)
    shape = (
        "one budget"
        if DEFAULT_RUNGS == 1
        else f"the top of {DEFAULT_RUNGS} rungs, eta {DEFAULT_ETA}"
    )
    lines.append(
        f"device: {device} ({detail}); default budget: {top} ({shape}); with --rungs 3, the top "
        f"rung is {three} and the bottom rung has 1/{DEFAULT_ETA**2} of its images"
    )
    # The search's verification trains at LONG_FACTOR times its budget (explorer.search.verification).
    lines.append(
        f"claims against v1/v2: retrained at {top}x{LONG_FACTOR} before the summary states them "
        "(--verify-seeds 0: off)"
    )
    return "\n".join(lines)


# At most this many studies get a line of their own in ``info``.
INFO_STUDIES = 20


def _study_networks(storage: str) -> list[str]:
    """One line per study (up to `INFO_STUDIES`): the network its designs are trained in."""
    store = open_storage(storage, create=False)
    summaries = [
        s
        for s in optuna.get_all_study_summaries(store, include_best_trial=False)
        if not is_companion_study(s.study_name)
    ]
    lines = []
    for summary in summaries[:INFO_STUDIES]:
        try:
            config = StudyConfig.from_study(summary.user_attrs)
        except ValueError as exc:
            what = f"unreadable settings: {exc}"
        else:
            what = config.network_text() if config is not None else "no settings yet"
        lines.append(f"  {summary.study_name}: {what}")
    if len(summaries) > INFO_STUDIES:
        lines.append(f"  ... and {len(summaries) - INFO_STUDIES} more")
    return lines


# --------------------------------------------------------------------------------------------
# Command line


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argparse parser of `inception-explorer`; the delegated commands parse their own flags."""
    p = Parser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Multi-objective architecture search over Inception blocks. Studies, weights and\n"
            "data are looked for from the current folder (studies/) and the environment; see\n"
            f"'{prog} info'.\n\n"
            "commands:\n"
            + "".join(f"  {name:<10} {text}\n" for name, text in COMMANDS.items())
            + f"\nEach has its own --help ({prog} search --help). search, evaluate and export are\n"
            "also python -m explorer.search, python -m explorer.evaluate, python -m explorer.export."
        ),
        usage="%(prog)s [-h] [--version] COMMAND [ARGS ...]",
        epilog="examples:\n"
        + "".join(
            f"  {prog} {cmd:<38} # {why}\n"
            for cmd, why in (
                ("search --trials 20 --budget smoke", "a minute, to try it"),
                ("dashboard", "the study in studies/"),
                ("evaluate --pareto", "retrain the front longer"),
                ("export --study NAME --best -o net.py", "standalone PyTorch code"),
                ("info", "what this install sees"),
            )
        ),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    # listed in the description: argparse's own list wraps names longer than eight letters
    sub = p.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)
    for name in DELEGATED:
        sub.add_parser(name, add_help=False)
    d = sub.add_parser(
        "dashboard",
        description="Serve the dashboard (Streamlit) on a study; stop it with Ctrl-C.",
    )
    d.add_argument("--study", default=None, metavar="NAME", help=STUDY_HELP)
    d.add_argument(
        "--storage",
        action="append",
        default=None,
        metavar="URL",
        help=f"{STORAGE_HELP}; repeat it to offer several on the page (--study is looked for in "
        "the first). Visitors choose among these only",
    )
    d.add_argument(
        "--port", type=_port, default=None, help=f"port to serve on (default: {DEFAULT_PORT})"
    )
    d.add_argument(
        "--address",
        default=LOOPBACK,
        help=f"address to listen on (default: {LOOPBACK}, this machine only); 0.0.0.0 serves every "
        "network, behind an access token",
    )
    d.add_argument(
        "--token",
        default=None,
        help=f"access token the page asks for (default: ${TOKEN_ENV}, which other users cannot "
        "read in the process list; made up and printed when --address is not a loopback address)",
    )
    d.add_argument(
        "--allow-dir",
        default=None,
        metavar="DIR",
        help="let visitors open a journal or SQLite file under DIR by typing its path on the page",
    )
    d.add_argument(
        "--allow-host",
        action="append",
        default=None,
        metavar="HOST[:PORT]",
        help="let visitors open a database URL on HOST by typing it on the page (repeatable)",
    )
    d.add_argument(
        "--no-browser", dest="browser", action="store_false", help="do not open a browser tab"
    )
    sub.add_parser(
        "info",
        description="Print the search space, the training budgets, where studies, weights and "
        "data are found from here, and the device a search would use.",
    )
    return p


def _version() -> str:

    try:
        return version(PROG)
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]])
        return module.main(argv[1:])
    try:
        ns = build_parser(prog).parse_args(argv)
        if ns.command is None:
            raise UsageError(f"a command is needed: {', '.join(COMMANDS)} (see {prog} --help)")
        if ns.command == "info":
            print(info_text())
            return 0
        return _dashboard(ns)
    except (UsageError, StorageError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:  # a broken install rather than bad input
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
