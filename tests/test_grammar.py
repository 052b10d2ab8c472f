"""One grammar for the subcommands: every parser built through its public builder, and every flag
that two of them take checked to mean the same in both (destination, type, default, choices,
the shared part of its help); the old spellings still work for one release with one line of
notice; and --study is resolved by one rule (`explorer.store.studies.choose_study`) everywhere,
with one line saying which study when it was not given."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import optuna
import pytest

from explorer import cli
from explorer.ablate import cli as ablate_cli
from explorer.evaluate import budget_words as evaluate_budgets
from explorer.evaluate import cli as evaluate_cli
from explorer.export import cli as export_cli
from explorer.search import cli as search_cli
from explorer.store import open_storage
from explorer.store.storages import StorageError
from explorer.store.studies import DEFAULT_STUDY, STORAGE_HELP, STUDY_HELP, choose_study
from explorer.usage import (
    DATA_DIR_HELP,
    DEVICE_HELP,
    DRY_RUN_HELP,
    QUIET_HELP,
    SEEDS_HELP,
    WORKERS_HELP,
    Renamed,
    UsageError,
    renamed_flags,
)


def _subparser(name: str) -> argparse.ArgumentParser:
    [sub] = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


PARSERS = {
    "search": search_cli.build_parser(),
    "evaluate": evaluate_cli.build_parser(),
    "export": export_cli.build_parser(),
    "ablate": ablate_cli.build_parser(),
    "dashboard": _subparser("dashboard"),
    "info": _subparser("info"),
}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """A parser's live flags (old spellings, kept for one release, aside)."""
    return {
        option: action
        for action in parser._actions
        if not isinstance(action, Renamed)
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


FLAGS = {name: _flags(p) for name, p in PARSERS.items()}
SHARED = sorted(
    {o for flags in FLAGS.values() for o in flags if sum(o in f for f in FLAGS.values()) > 1}
)

# What every occurrence of a shared flag's help starts with.
SHARED_HELP = {
    "--study": STUDY_HELP,
    "--storage": STORAGE_HELP,
    "--device": DEVICE_HELP,
    "--data-dir": DATA_DIR_HELP,
    "--seeds": SEEDS_HELP,
    "--quiet": QUIET_HELP,
    "--workers": WORKERS_HELP,
    "--dry-run": DRY_RUN_HELP,
    "--budget": "training budget of ",
}
# Shared flags whose help is each subcommand's own after what they agree on: what is done with
# the trials or the network differs, the flag's value does not.
OWN_HELP = {"--trial", "--pareto", "--width", "--stages", "--stem"}
# Where the default is the subcommand's on purpose, said in its help: evaluate retrains longer
# (long), ablate at the study's own budget (top), search keeps the study's (None).
OWN_DEFAULT = {"--budget"}
# Values each shared flag must read the same in every subcommand (where the types are not one
# function, they are compared by what they make of these).
SAMPLES = {
    "--stages": ["2,2", "1,1,1"],
    "--stem": ["64"],
    "--width": ["0.5"],
    "--budget": ["quick", "smokex2", "standard"],
}


def test_every_shared_flag_is_classified():
    """A flag that a second subcommand starts to take is either given the shared help or named
    here as one whose help is the subcommand's own."""
    assert "--study" in SHARED and "--seeds" in SHARED and "--budget" in SHARED
    assert set(SHARED) <= set(SHARED_HELP) | OWN_HELP, set(SHARED) - set(SHARED_HELP) - OWN_HELP


@pytest.mark.parametrize("flag", SHARED)
def test_a_shared_flag_means_the_same_in_every_subcommand(flag):
    where = {name: flags[flag] for name, flags in FLAGS.items() if flag in flags}
    (first_name, first), *rest = where.items()
    for name, action in rest:
        pair = f"{flag} in {first_name} and {name}"
        assert action.dest == first.dest, pair
        assert action.choices == first.choices, pair
        if flag not in OWN_DEFAULT:
            assert action.default == first.default, pair
        if action.type is not first.type:
            assert flag in SAMPLES, f"{pair}: two types; name the values they must agree on"
            for value in SAMPLES[flag]:
                assert action.type(value) == first.type(value), f"{pair}: {value!r}"
        # the dashboard offers several storages (append); everywhere else a flag takes one value
        if not (flag == "--storage" and "dashboard" in (first_name, name)):
            assert (action.nargs, type(action)) == (first.nargs, type(first)), pair
    for name, action in where.items():
        if flag in SHARED_HELP:
            assert action.help.startswith(SHARED_HELP[flag]), f"{flag} in {name}: {action.help}"


def test_one_vocabulary_for_budgets():
    """Every --budget and --verify-budget takes the presets, each with xK, in the same words;
    where the study's own budget can be read, top and long mean the same everywhere."""
    budgets = [
        (name, action)
        for name, flags in FLAGS.items()
        for flag, action in flags.items()
        if flag == "--budget" or flag.endswith("-budget")
    ]
    assert {name for name, _ in budgets} == {"search", "evaluate", "ablate"}
    for name, action in budgets:
        assert evaluate_budgets.PRESETS_HELP in action.help, name
        assert action.type("quickx9") == "quickx9"
        with pytest.raises(argparse.ArgumentTypeError, match="unknown budget 'huge'"):
            action.type("huge")
        for word in ("top", "long"):
            try:
                action.type(word)
            except argparse.ArgumentTypeError:
                continue
            assert f"{word}: " in action.help, f"{name} takes {word} without saying what it is"
    # evaluate and ablate read a study's budget: both words, one type
    assert FLAGS["evaluate"]["--budget"].type is FLAGS["ablate"]["--budget"].type
    assert evaluate_budgets.STUDY_WORDS_HELP in FLAGS["evaluate"]["--budget"].help


def test_every_count_of_seeds_is_spelled_seeds():
    """A number of seeds is --seeds K where a subcommand asks for one, --final-seeds K and
    --verify-seeds K in the search, which asks for two; --seed (one seed's value) is not a count."""
    counts = {
        (name, flag)
        for name, flags in FLAGS.items()
        for flag, action in flags.items()
        if action.metavar == "K" and "seed" in flag
    }
    assert counts == {
        ("search", "--final-seeds"),
        ("search", "--verify-seeds"),
        ("evaluate", "--seeds"),
        ("ablate", "--seeds"),
    }
    for flags in FLAGS.values():
        assert not [
            f for f in flags if "seed" in f and f not in {"--seed", *(c[1] for c in counts)}
        ]


# (subcommand, old spelling, new spelling, value): each old spelling of this release
RENAMED = [
    ("search", "--verify", "--verify-seeds", "3"),
    ("export", "--max-params", "--select-max-params", "5000"),
    ("export", "--min-accuracy", "--select-min-accuracy", "0.5"),
]


def test_the_renamed_flags_are_all_listed():
    found = {(n, old, new) for n, p in PARSERS.items() for old, new in renamed_flags(p).items()}
    assert found == {(n, old, new) for n, old, new, _ in RENAMED}


REQUIRED = {  # what each parser needs besides the flag to parse at all
    "search": [],
    "export": ["--best", "-o", "x.py"],
}


@pytest.mark.parametrize(("name", "old", "new", "value"), RENAMED)
def test_an_old_spelling_works_with_one_line_of_notice(capsys, name, old, new, value):
    parser = PARSERS[name]
    given = parser.parse_args([*REQUIRED[name], new, value])
    assert capsys.readouterr().err == ""
    by_old = parser.parse_args([*REQUIRED[name], old, value])
    [notice] = capsys.readouterr().err.splitlines()
    assert notice == (f"{parser.prog}: {old} is deprecated and goes in the next release; use {new}")
    assert by_old == given and vars(given) != vars(parser.parse_args(REQUIRED[name]))
    shown = re.findall(r"--[\w-]+", parser.format_help())
    assert old not in shown and new in shown
    with pytest.raises(UsageError, match=f"argument {old}: "):  # checked as the new one is
        parser.parse_args([*REQUIRED[name], old, "many"])


def test_the_search_config_file_takes_the_new_and_the_old_key(tmp_path, capsys):
    new = tmp_path / "new.toml"
    new.write_text("verify_seeds = 4\n")
    old = tmp_path / "old.toml"
    old.write_text("verify = 4\n")
    assert search_cli.parse_settings(["--config", str(new)]).verify_seeds == 4
    assert capsys.readouterr().err == ""
    assert search_cli.parse_settings(["--config", str(old)]).verify_seeds == 4
    assert "--verify is deprecated" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--verify-seeds must be 0"):  # named as the flag
        search_cli.parse_settings(["--verify-seeds", "1"])


# --------------------------------------------------------------------------------------------
# --study: one rule


@pytest.mark.parametrize(
    ("names", "given", "chosen", "why"),
    [
        (["a", "b"], "b", "b", None),
        (["a"], None, "a", "the only study in the storage"),
        (["a", DEFAULT_STUDY], None, DEFAULT_STUDY, "the default name"),
    ],
)
def test_the_study_rule(names, given, chosen, why):
    name, said = choose_study(names, given)
    assert name == chosen
    assert said is None if why is None else said.startswith(why)


@pytest.mark.parametrize(
    ("names", "given", "message"),
    [
        (["a", "b"], "c", "no study named 'c' in this storage (studies: a, b)"),
        (["b", "a"], None, f"the storage holds 2 studies (a, b) and none is named {DEFAULT_STUDY}"),
        ([], None, "the storage holds no study yet"),
    ],
)
def test_the_study_rule_asks_for_study_where_it_cannot_choose(names, given, message):
    with pytest.raises(StorageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        choose_study(names, given)


def test_a_search_starts_its_default_study_where_a_reader_would_ask():
    assert choose_study([], None, create=True)[0] == DEFAULT_STUDY
    assert choose_study(["a", "b"], None, create=True)[0] == DEFAULT_STUDY
    assert choose_study(["a"], None, create=True)[0] == "a"
    assert choose_study(["a"], "new", create=True) == ("new", None)


@pytest.fixture
def two_studies(study_path) -> str:
    """The "demo" study and a second, empty one, in one journal."""
    optuna.create_study(study_name="other", storage=open_storage(study_path))
    return study_path


def _run(capsys, main, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


@pytest.mark.parametrize(
    ("name", "main", "argv"),
    [
        ("evaluate", evaluate_cli.main, ["--pareto", "--dry-run"]),
        ("ablate", ablate_cli.main, ["--dry-run"]),
        ("export", export_cli.main, ["--best", "-o", "OUT"]),
    ],
)
def test_every_reader_resolves_the_study_one_way(capsys, study_path, tmp_path, name, main, argv):
    argv = [a.replace("OUT", str(tmp_path / "net.py")) for a in argv]
    code, _, err = _run(capsys, main, ["--storage", study_path, *argv])
    assert code == 0
    assert err[0] == "study 'demo': the only study in the storage (--study NAME for another)", err
    code, _, err = _run(capsys, main, ["--storage", study_path, "--study", "demo", *argv])
    assert code == 0 and not any(line.startswith("study 'demo': the only") for line in err)

    optuna.create_study(study_name="other", storage=open_storage(study_path))
    code, out, err = _run(capsys, main, ["--storage", study_path, *argv])
    assert code == 2 and len(err) == 1, err
    assert err[0].endswith(
        f"the storage holds 2 studies (demo, other) and none is named {DEFAULT_STUDY}; pick one "
        "with --study"
    )
    shutil.copyfile(study_path, tmp_path / "copy.journal")
    code, _, err = _run(capsys, main, ["--storage", study_path, "--study", "nope", *argv])
    assert code == 2 and err == [
        f"{PARSERS[name].prog}: error: no study named 'nope' in this storage (studies: demo, other)"
    ]


def test_the_dashboard_resolves_the_study_the_same_way(capsys, monkeypatch, study_path):
    from streamlit.web import cli as streamlit_cli

    calls = []
    monkeypatch.setattr(streamlit_cli, "main", lambda args, prog_name: calls.append(args))
    assert cli.main(["dashboard", "--storage", study_path]) == 0
    assert calls[-1][-2:] == ["--study", "demo"]
    assert capsys.readouterr().err.splitlines() == [
        "study 'demo': the only study in the storage (--study NAME for another)"
    ]
    optuna.create_study(study_name="other", storage=open_storage(study_path))
    assert cli.main(["dashboard", "--storage", study_path]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("inception-explorer: error: the storage holds 2 studies (demo, other)")
    # a storage not made yet: the page waits for the first search
    calls.clear()
    assert cli.main(["dashboard", "--storage", str(Path(study_path).with_name("new.journal"))]) == 0
    assert "--study" not in calls[-1]


@pytest.mark.parametrize("word", ["top", "long", "smokex2"])
def test_a_budget_word_is_the_same_budget_in_evaluate_and_ablate(capsys, study_path, word):
    said = []
    for main, argv in ((evaluate_cli.main, ["--pareto"]), (ablate_cli.main, [])):
        assert main(["--storage", study_path, "--study", "demo", *argv, "--budget", word,
                     "--dry-run"]) == 0  # fmt: skip
        said.append(capsys.readouterr().out.strip().splitlines()[-1].split(" under budget ")[1])
    assert said[0] == said[1]
    if word == "top":  # the study's own: make_study searched it at smoke
        assert said[0].startswith("smoke (the top rung, smoke: ")


def test_the_search_chooses_its_study_by_the_same_rule(study_path, tmp_path):
    def chosen(storage, *flags):
        settings = search_cli.parse_settings(["--storage", storage, *flags])
        s, line = search_cli.choose_search_study(settings)
        return s.study, line

    new = str(tmp_path / "new.journal")
    assert chosen(new) == (
        DEFAULT_STUDY,
        f"study '{DEFAULT_STUDY}': a new study under the default name (the storage holds no "
        "study yet) (--study NAME for another)",
    )
    assert chosen(study_path)[0] == "demo"  # the only study, as every reader takes it
    assert chosen(study_path, "--study", "demo") == ("demo", None)
    # a dataset names its own study rather than resuming another dataset's only one
    assert chosen(study_path, "--dataset", "mnist") == (
        "mnist-inception-block",
        "study 'mnist-inception-block': the default name for --dataset mnist, new (--study NAME "
        "for another)",
    )
    optuna.create_study(study_name="other", storage=open_storage(study_path))
    assert chosen(study_path)[0] == DEFAULT_STUDY  # where a reader would ask for --study


def test_the_docs_use_no_old_spelling():
    from tests.test_docs import PAGES, commands

    old = []
    for page in PAGES:
        for line in commands(page.read_text()):
            words = line.replace("python -m explorer.", "python -m explorer ").split()
            if words[:1] == ["inception-explorer"]:
                sub = words[1]
            elif words[:3] == ["python", "-m", "explorer"] and len(words) > 3:
                sub = words[3]
            else:
                continue
            renamed = renamed_flags(PARSERS[sub]) if sub in PARSERS else {}
            old += [f"{page.name}: {line}" for w in words if w.split("=")[0] in renamed]
    assert not old, old
