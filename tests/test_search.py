"""The search CLI: bad input, a small real search, resume, failures, pruning, recovery."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search_space
from explorer import search
from explorer.analysis import reeval_results, study_records
from explorer.search import SearchSettings
from explorer.search import study as study_mod
from explorer.search import trial as objective
from explorer.store import WorkerToken, open_storage, study_config, study_names
from explorer.store.work import recover
from explorer.training import PROXY_NAMES, default_budget
from search_space import DEFAULT_SPACE, REFERENCES, NetworkConfig, config_from_trial, network_params

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = search.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def base_args(
    tmp_path: Path, data: Path, trials: int = 2, proxies: bool = False, verify: bool = False
) -> list[str]:
    """A one-rung smoke search of `trials` designs. Zero-cost proxies and the verification of
    claims are off unless asked for: they cost about a third of a smoke trial and a third of the
    search, and only the tests about them read them."""
    return [
        "--trials",
        str(trials),
        "--budget",
        "smoke",
        "--rungs",
        "1",
        "--device",
        "cpu",
        "--data-dir",
        str(data),
        "--storage",
        str(tmp_path / "s.journal"),
        "--study",
        "t",
        "--workers",
        "1",
        "--quiet",
        *([] if proxies else ["--no-proxies"]),
        *([] if verify else ["--verify-seeds", "0"]),
    ]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--trials", "-1"], "--trials"),
        (["--dataset", "imagenet"], "--dataset"),
        (["--objectives", "val_acc,beauty"], "beauty"),
        (["--objectives", "params"], "val_acc"),
        (["--workers", "0"], "--workers"),
        (["--workers", "many"], "--workers"),
        (["--prescreen", "0"], "--prescreen"),
        (["--proxy", "fisher"], "--proxy"),
        (["--sampler", "cma"], "--sampler"),
        (["--storage", "mongodb://x/y"], "mongodb"),
        (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open storage"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, tiny_fmnist, capsys):
    full = ["--data-dir", str(tiny_fmnist), "--storage", str(tmp_path / "s.journal"), *args]
    code = search.main(full)
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err


def test_missing_dataset_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EXPLORER_DATA", str(tmp_path / "nowhere"))
    code, _, err = run_cli(
        [
            "--dataset",
            "cifar10",
            "--data-dir",
            str(tmp_path / "empty"),
            "--storage",
            str(tmp_path / "s.journal"),
        ],
        capsys,
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "cifar10" in err


def test_help_shows_defaults():
    out = subprocess.run(
        [sys.executable, "-m", "explorer.search", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    for flag in (
        "--trials",
        "--storage",
        "--budget",
        "--sampler",
        "--objectives",
        "--workers",
        "--no-references",
        "--no-prune",
        "--timeout",
        "--rungs",
        "--eta",
        "--final-seeds",
        "--verify-seeds",
    ):
        assert flag in out
    flat = " ".join(out.split())
    assert "default: 100" in flat and "tpe for a new study" in flat
    # The default is one budget, and what each rung of a three-rung search is.
    assert "for a new study 1, every design at one budget" in flat
    assert "rung 0 = quick (4 epochs x 1,024 images)" in flat and "rung 2 = quickx9 (9,216)" in flat
    # The examples keep their lines, so they can be copied.
    assert "\n  python -m explorer.search --trials 20 --budget smoke " in out
    assert "\n  python -m explorer.evaluate --pareto " in out


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_fmnist) -> tuple[Path, int, str]:
    """One search of three designs and the references, shared by the tests that only read it:
    (its folder, exit code, what it printed)."""
    folder = tmp_path_factory.mktemp("searched")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = search.main(base_args(folder, tiny_fmnist, trials=3, proxies=True))
    return folder, code, out.getvalue()


def test_search_trains_references_first_and_records_everything(searched):
    tmp_path, code, out = searched
    assert code == 0
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    trials = study.get_trials()
    assert [t.user_attrs.get("reference") for t in trials[:2]] == ["v1", "v2"]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert sum(not t.user_attrs.get("reference") for t in finished) == 3
    for t in trials[:2]:
        ref = t.user_attrs["reference"]
        net = NetworkConfig.from_dict(t.user_attrs["network"])
        assert net.block == REFERENCES[ref]
        assert DEFAULT_SPACE.params_from_config(net.block) == t.params
    for t in (t for t in trials if t.state == TrialState.COMPLETE):
        a = t.user_attrs
        net = NetworkConfig.from_dict(a["network"])
        assert a["params"] == network_params(net) == t.values[1]
        assert a["val_acc"] == pytest.approx(t.values[0])
        assert a["flops"] > 0 and a["latency_ms"] > 0 and a["images_per_s"] > 0
        assert len(a["curves"]["val_acc"]) == len(a["curves"]["train_loss"]) >= 1
        assert {"device", "budget", "seed", "versions", "train_time_s", "weights"} <= set(a)
        assert set(a["proxies"]) == set(PROXY_NAMES)  # scored before training
        assert all(v is None or math.isfinite(v) for v in a["proxies"].values())
    # the closing summary shows the references and what to run next
    assert "v1" in out and "v2" in out and "export --study" in out and "dashboard" in out


def test_one_rung_is_a_single_budget_search(searched):
    folder, code, _ = searched
    assert code == 0
    storage = open_storage(str(folder / "s.journal"))
    assert study_names(storage, rungs=True) == ["t"]  # no rung studies beside it
    study = optuna.load_study(study_name="t", storage=storage)
    assert study_config(study).rungs == 1
    assert len(study.trials) == 5  # v1, v2 and the three designs, all at the smoke budget
    assert {t.user_attrs["budget"] for t in study.trials} == {"smoke"}
    assert all("rung" not in t.user_attrs for t in study.trials)


def test_rerun_resumes_without_retraining(tmp_path, tiny_fmnist, capsys):
    args = base_args(tmp_path, tiny_fmnist, trials=1)
    assert run_cli(args, capsys)[0] == 0
    storage = open_storage(str(tmp_path / "s.journal"))
    before = {
        t.number: (t.state, t.values, t.datetime_complete)
        for t in optuna.load_study(study_name="t", storage=storage).trials
    }
    assert run_cli(args, capsys)[0] == 0  # nothing to do: the study already has 1
    args[1] = "2"
    assert run_cli(args, capsys)[0] == 0
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    after = {t.number: (t.state, t.values, t.datetime_complete) for t in study.trials}
    assert all(after[n] == v for n, v in before.items())
    assert (
        sum(
            1 for r in study_records(study) if not r.reference and r.state in ("COMPLETE", "PRUNED")
        )
        == 2
    )
    assert sum(1 for r in study_records(study) if r.reference) == 2  # references not trained again


def test_changed_budget_on_existing_study_is_refused(tmp_path, tiny_fmnist, capsys):
    args = base_args(tmp_path, tiny_fmnist, trials=0)
    assert run_cli(args, capsys)[0] == 0
    args[args.index("--budget") + 1] = "quick"
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "budget" in err


def test_diverging_trial_is_recorded_and_search_goes_on(tmp_path, tiny_fmnist, capsys, monkeypatch):
    from explorer.training import trainer as train

    real_train = train.train
    calls = {"n": 0}

    def flaky(model, data, config, device, epoch_callback=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise train.DivergedError("loss is nan at step 2", train.TrainResult(device="cpu"))
        return real_train(model, data, config, device, epoch_callback=epoch_callback)

    monkeypatch.setattr(train, "train", flaky)
    assert run_cli(base_args(tmp_path, tiny_fmnist, trials=2), capsys)[0] == 0
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("diverged")
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4  # two references and two search trials despite the failure


def test_no_references_and_no_proxies_flags(tmp_path, tiny_fmnist, capsys):
    args = [*base_args(tmp_path, tiny_fmnist, trials=1, proxies=True), "--no-references",
            "--no-proxies"]  # fmt: skip
    assert run_cli(args, capsys)[0] == 0
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    assert len(study.trials) == 1 and "reference" not in study.trials[0].user_attrs
    assert "proxies" not in study.trials[0].user_attrs


def test_proxies_do_not_change_what_a_trial_learns(tmp_path, tiny_fmnist, capsys):
    accs = []
    for flag in ([], ["--no-proxies"]):
        folder = tmp_path / str(len(accs))
        args = [*base_args(folder, tiny_fmnist, 1, proxies=True), "--no-references", *flag]
        assert run_cli(args, capsys)[0] == 0
        study = optuna.load_study(
            study_name="t",
            storage=open_storage(str(tmp_path / str(len(accs)) / "s.journal")),
        )
        accs.append(study.trials[0].user_attrs["curves"]["val_acc"])
    assert accs[0] == accs[1]


def test_prescreen_trains_the_candidate_the_proxy_chose(tmp_path, tiny_fmnist, capsys):
    args = [*base_args(tmp_path, tiny_fmnist, trials=2, proxies=True), "--no-references",
            "--prescreen", "3"]  # fmt: skip
    assert run_cli(args, capsys)[0] == 0
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    assert len(study.trials) == 2  # nothing left queued beyond --trials
    for t in study.trials:
        pre = t.user_attrs["prescreen"]
        assert pre["m"] == 3 and pre["proxy"] == "naswot" and len(pre["scores"]) == 3
        assert pre["params"][pre["chosen"]] == t.user_attrs["params"]
        # the choice is not dominated: no other candidate scores higher with no more parameters
        chosen_score = pre["scores"][pre["chosen"]]
        for score, params in zip(pre["scores"], pre["params"]):
            if score is not None and chosen_score is not None:
                assert not (score > chosen_score and params <= t.user_attrs["params"])


def test_workers_default_to_one_per_core_on_a_cpu(monkeypatch):
    from explorer.training import devices

    assert search.parse_settings([]).workers is None  # auto, resolved once the device is known
    assert search.parse_settings(["--workers", "3"]).workers == 3
    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    assert len(devices.plan_workers("cpu", None)) == 2
    assert devices.cpu_threads_per_worker(2) == 1 and devices.cpu_threads_per_worker(1) == 2
    monkeypatch.setattr(devices, "usable_cpus", lambda: 64)
    assert len(devices.plan_workers("cpu", None)) == 8 and devices.cpu_threads_per_worker(8) == 8


def test_summary_shows_re_evaluations_beside_search_accuracy(tmp_path):
    from tests.helpers import make_study

    study = make_study(str(tmp_path / "s.journal"), weights=False)
    records = study_records(study)
    v1 = next(r for r in records if r.reference == "v1")
    study.set_user_attr(
        f"reeval:{v1.number}",
        {
            "test_acc": [0.8, 0.82],
            "val_acc": [0.79, 0.81],
            "budget": "long",
            "test_acc_mean": 0.81,
            "test_acc_std": 0.0141,
            "seeds": 2,
        },
    )
    again = {r.number: r for r in study_records(study)}
    assert again[v1.number].reeval["test_acc"] == [0.8, 0.82]
    assert all(r.reeval is None for n, r in again.items() if n != v1.number)
    text = search.summary(study, str(tmp_path / "s.journal"))
    assert "re-evaluated test acc" in text
    row = next(line for line in text.splitlines() if " v1 " in line)
    assert "0.8100 ± 0.0141 (2x)" in row
    from explorer.usage import command

    storage = ["--storage", str(tmp_path / "s.journal")]
    assert command("evaluate", "--study", "demo", *storage, "--pareto") in text
    assert command("export", "--study", "demo", *storage, "--best") in text
    assert command("dashboard", *storage, "--study", "demo") in text
    assert command("ablate", "--study", "demo", *storage) in text


def _record(acc_curve, params):
    from explorer.store import TrialRecord

    return TrialRecord(0, "COMPLETE", curves={"val_acc": acc_curve}, params=params)


def test_prune_rule_needs_enough_dominating_trials():
    rule = objective.PruneRule(min_dominators=2, warmup=3)
    completed = [_record([0.5, 0.7], 1000), _record([0.6, 0.8], 2000), _record([0.1, 0.2], 500)]
    assert rule.should_prune(0, 0.40, {"params": 5000}, completed)  # two better and smaller
    assert not rule.should_prune(0, 0.40, {"params": 1500}, completed)  # only one is smaller
    assert not rule.should_prune(0, 0.55, {"params": 5000}, completed)  # only one is better
    assert not rule.should_prune(2, 0.10, {"params": 5000}, completed)  # no curve that long
    assert not rule.should_prune(0, 0.10, {"params": 5000}, completed[:2])  # still warming up


def test_pruned_trials_keep_their_curves(tmp_path, tiny_fmnist, capsys, monkeypatch):
    monkeypatch.setattr(objective.PruneRule, "should_prune", lambda self, *a: True)
    assert run_cli(base_args(tmp_path, tiny_fmnist, trials=2), capsys)[0] == 0
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 2  # both search trials; references are never pruned
    for t in pruned:
        assert t.user_attrs["pruned_at_epoch"] == 1
        assert len(t.user_attrs["curves"]["val_acc"]) == 1


def test_recover_fails_and_requeues_trials_of_dead_workers(tmp_path):
    url = str(tmp_path / "s.journal")
    storage = open_storage(url)
    study = optuna.create_study(
        study_name="r", storage=storage, directions=["maximize", "minimize"]
    )
    study_mod.enqueue_reference(study, "v1")
    live, dead = WorkerToken(url), WorkerToken(url)
    trial = study.ask()
    trial.set_user_attr("worker", dead.id)
    other = study.ask()
    other.set_user_attr("worker", live.id)
    dead._file.close()  # the process holding it died: its lock is gone, its file stays
    assert config_from_trial(trial) == REFERENCES["v1"]
    queued = recover(study, url)
    assert queued == [trial.number]
    frozen = study.trials
    assert frozen[0].state == TrialState.FAIL and "fail_reason" not in frozen[0].user_attrs
    assert "died" in frozen[2].user_attrs["retry_reason"]  # the reason goes with the retry
    assert frozen[1].state == TrialState.RUNNING  # its worker lives
    assert frozen[2].state == TrialState.WAITING
    assert frozen[2].user_attrs["reference"] == "v1" and frozen[2].user_attrs["retry_of"] == 0
    assert frozen[2].system_attrs["fixed_params"] == frozen[0].params
    assert recover(study, url) == []  # not queued twice
    from explorer.search import MAX_ATTEMPTS

    for attempt in range(2, MAX_ATTEMPTS + 1):  # a retry that dies gets one retry of its own
        retry = study.ask()
        assert retry.user_attrs["attempt"] == attempt
        retry.set_user_attr("worker", dead.id)
        dead.path.touch()
        queued = recover(study, url)
        assert queued == ([retry.number] if attempt < MAX_ATTEMPTS else [])
        assert study.trials[retry.number].state == TrialState.FAIL
    assert recover(study, url) == []
    live.release()


def test_failed_trials_of_their_own_are_not_retried(tmp_path):
    url = str(tmp_path / "s.journal")
    study = optuna.create_study(storage=open_storage(url), directions=["maximize"] * 2)
    for reason in ("diverged: loss is nan", "error: KeyError: 'x'", "out of memory"):
        t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        t.set_user_attr("fail_reason", reason)
        study.tell(t, state=TrialState.FAIL)
    assert recover(study, url) == []


def test_study_opens_with_plain_optuna(searched):
    tmp_path = searched[0]
    code = (
        "import optuna; from optuna.storages import JournalStorage;"
        "from optuna.storages.journal import JournalFileBackend;"
        f"s = optuna.load_study(study_name='t', storage=JournalStorage(JournalFileBackend({str(tmp_path / 's.journal')!r})));"
        "print(len(s.trials), len(s.best_trials))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[0] == "5"


@pytest.mark.slow
def test_two_local_workers_share_a_journal(tmp_path, tiny_fmnist):
    cmd = [
        sys.executable,
        "-m",
        "explorer.search",
        *base_args(tmp_path, tiny_fmnist, trials=4),
        "--workers",
        "2",
        "--no-references",
        "--no-weights",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    search_done = [
        t for t in study.trials if not t.user_attrs.get("reference") and t.state.is_finished()
    ]
    assert len(search_done) == 4  # slots are claimed under the study's lock
    assert len({t.user_attrs["sampler_seed"] for t in search_done}) == 2  # one per worker


def test_study_opens_in_optuna_dashboard(searched):
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    tmp_path = searched[0]
    app = wsgi(open_storage(str(tmp_path / "s.journal")))

    def get(path: str) -> tuple[str, bytes]:
        env: dict = {"PATH_INFO": path}
        setup_testing_defaults(env)
        status = []
        body = b"".join(app(env, lambda s, h, *a: status.append(s)))
        return status[0], body

    status, body = get("/api/studies")
    assert status.startswith("200")
    studies = json.loads(body)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["t"]
    status, body = get(f"/api/studies/{studies[0]['study_id']}")
    assert status.startswith("200")
    trials = json.loads(body)["trials"]
    assert len(trials) == 5 and any(a["key"] == "reference" for a in trials[0]["user_attrs"])


def test_config_file_sets_flags_and_the_command_line_wins(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        'trials = 7\nbudget = "smoke"\nobjectives = ["val_acc", "params", "flops"]\n'
        "prune = false\nreferences = true\nworkers = 2\n"
    )
    s = search.parse_settings(["--config", str(config), "--trials", "3"])
    assert (s.trials, s.budget, s.objectives) == (3, "smoke", ("val_acc", "params", "flops"))
    assert s.prune is False and s.references is True and s.workers == 2


@pytest.mark.parametrize(
    "text, needle",
    [
        ("trials = -4\n", "--trials"),
        ('budget = "huge"\n', "huge"),
        ("colour = 1\n", "unknown key 'colour'"),
        ('prune = "no"\n', "true or false"),
        ("trials = [\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(text, needle, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(text)
    code, _, err = run_cli(["--config", str(config)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    code, _, err = run_cli(["--config", str(tmp_path / "missing.toml")], capsys)
    assert code == 2 and "cannot read" in err


def test_shipped_study_configs_parse():
    """Each shipped studies/*.toml gives the settings its keys say (read here with tomllib, not
    through the CLI's reader) and the defaults for every key it leaves out."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    fields = {f.name for f in dataclasses.fields(SearchSettings)}
    configs = sorted((ROOT / "studies").glob("*.toml"))
    assert configs
    for path in configs:
        data = tomllib.loads(path.read_text())
        assert data, f"{path.name} sets nothing"
        expected: dict[str, object] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            assert name in fields, f"{path.name}: {key} is not a SearchSettings field"
            if isinstance(value, list):
                value = tuple(value)
            if name == "workers" and value == "auto":
                value = None
            expected[name] = value
        settings = search.parse_settings(["--config", str(path)])
        for name, value in expected.items():
            got = getattr(settings, name)
            assert got == value and type(got) is type(value), (path.name, name, got, value)
        assert settings == SearchSettings(**expected), path.name


def test_a_design_proposed_again_is_not_retrained(tmp_path, tiny_fmnist, capsys):
    args = [*base_args(tmp_path, tiny_fmnist, trials=1), "--no-references", "--no-weights"]
    assert run_cli(args, capsys)[0] == 0
    storage = open_storage(str(tmp_path / "s.journal"))
    study = optuna.load_study(study_name="t", storage=storage)
    first = study.trials[0]
    study.enqueue_trial(first.params)
    args[1] = "2"  # --trials 2
    assert run_cli(args, capsys)[0] == 0
    second = optuna.load_study(study_name="t", storage=storage).trials[1]
    assert second.params == first.params and second.user_attrs["duplicate_of"] == 0
    assert second.values == first.values and second.state == first.state
    assert second.user_attrs["curves"] == first.user_attrs["curves"]


def test_second_worker_mid_setup_neither_fails_nor_queues_references_twice(tmp_path):
    """A worker that opens a study whose first worker died before writing its settings (both
    started together on a shared storage) completes the set-up instead of failing."""
    url = str(tmp_path / "j.journal")
    s = search.SearchSettings(trials=3, study="race", storage=url, rungs=1)
    storage = open_storage(url)
    first = optuna.create_study(study_name="race", storage=storage, directions=["maximize"] * 2)
    study_mod.enqueue_reference(first, "v1")  # the first worker stopped half-way through
    study, config = study_mod.open_search_study(s, storage, url, "quick")
    refs = [t.user_attrs.get("reference") for t in study.get_trials(deepcopy=False)]
    assert sorted(r for r in refs if r) == sorted(study_mod.DEFAULT_REFERENCES)
    assert config.objectives == ("val_acc", "params") and config.dataset == "fashion-mnist"
    again, _ = study_mod.open_search_study(s, storage, url, "quick")  # a later worker
    assert len(again.trials) == len(refs)


def _made(tmp_path, *flags: str) -> list[str]:
    """Make study 't' (settings and queued references only, no training); the args to resume it."""
    from explorer.search import parse_settings

    args = ["--storage", str(tmp_path / "s.journal"), "--study", "t", "--device", "cpu",
            "--budget", "smoke", "--rungs", "1", "--quiet", *flags]  # fmt: skip
    s = parse_settings(args)
    url = s.storage
    study_mod.open_search_study(s, open_storage(url), url, "smoke")
    return args[: -len(flags) or None] if flags else args


@pytest.mark.parametrize(
    "flags, field, stored, keep",
    [
        (["--seed", "7"], "split_seed", "0", "--seed 0"),
        (["--width", "0.5"], "width", "0.25", "--width 0.25"),
        (["--dataset", "mnist"], "dataset", "'fashion-mnist'", "--dataset fashion-mnist"),
        (["--objectives", "val_acc,flops"], "objectives", "val_acc,params", "--objectives val_acc,params"),
        (["--sampler", "random"], "sampler", "'tpe'", "--sampler tpe"),
        (["--budget", "quick"], "budget", "'smoke'", "--budget smoke"),
        (["--max-params", "9000"], "constraints", "{}", "--max-params"),
    ],
)  # fmt: skip
def test_resume_with_other_settings_is_refused_naming_field_values_and_flag(
    flags, field, stored, keep, tmp_path, capsys
):
    args = _made(tmp_path)
    code, _, err = run_cli([*args, *flags], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"made with {field}={stored}" in lines[0] and keep in lines[0], lines[0]
    assert "--override" in lines[0]


def test_override_trains_the_given_settings_into_the_study(tmp_path, tiny_fmnist, capsys):
    """--override: the new trials train under the seed and budget given, and record them; the
    study's stored settings stay as they were made."""
    args = base_args(tmp_path, tiny_fmnist, trials=1)
    assert search.main([*args, "--no-references"]) == 0, capsys.readouterr().err
    more = [a if a != "1" or i != 1 else "2" for i, a in enumerate(args)]
    assert more[:2] == ["--trials", "2"]
    more[more.index("--budget") + 1] = "smokex2"
    code = search.main([*more, "--seed", "7", "--override", "--no-references"])
    assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    first, second = (t.user_attrs for t in study.trials)
    assert (first["seed"], first["budget"]) == (0, "smoke")
    assert (second["seed"], second["budget"]) == (7, "smokex2")
    assert study_config(study).budget == "smoke" and study_config(study).train_seed == 0


def test_changed_budget_preset_is_refused_and_the_stored_budget_wins(tmp_path, capsys, monkeypatch):
    import dataclasses

    from explorer.search import parse_settings
    from explorer.training import budgets as train

    args = _made(tmp_path)
    stored_lr = train.BUDGETS["smoke"].lr
    recalibrated = dataclasses.replace(train.BUDGETS["smoke"], lr=stored_lr / 2)
    monkeypatch.setitem(train.BUDGETS, "smoke", recalibrated)
    code, _, err = run_cli(args, capsys)  # --budget smoke given
    assert code == 2 and "lr" in err and "leave --budget out" in err, err
    without = [a for a in args if a not in ("--budget", "smoke")]
    s = parse_settings(without)
    _, config = study_mod.open_search_study(s, open_storage(s.storage), s.storage, "quick")
    assert config.budget == "smoke" and config.train_config["lr"] == stored_lr


def test_sqlite_with_several_workers_runs_one_and_names_the_journal(tmp_path, tiny_fmnist, capsys):
    args = base_args(tmp_path, tiny_fmnist, trials=1)
    args[args.index("--storage") + 1] = f"sqlite:///{tmp_path / 's.db'}"
    args[args.index("--workers") + 1] = "2"
    code, _, err = run_cli([*args, "--no-references", "--no-weights"], capsys)
    assert code == 0, err
    notes = [line for line in err.splitlines() if "SQLite" in line]
    assert len(notes) == 1 and "s.journal" in notes[0] and "Traceback" not in err
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_unexpected_errors_fail_their_trials_unretried_and_stop_the_worker(
    tmp_path, tiny_fmnist, capsys, monkeypatch
):
    def broken(self, trial, model, attrs):
        raise KeyError("no such thing")

    monkeypatch.setattr(objective.TrialRunner, "_train", broken)
    args = [*base_args(tmp_path, tiny_fmnist, trials=2), "--no-references"]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "3 trials in a row failed" in err and "Traceback" not in err, err
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    assert all(
        t.user_attrs["fail_reason"] == "error: KeyError: 'no such thing'" for t in study.trials
    )
    assert not any("retry_of" in t.user_attrs for t in study.trials)


@pytest.mark.slow
def test_a_worker_process_dying_of_an_error_stops_the_search_with_one_line(tmp_path):
    bad = tmp_path / "bad-data"
    bad.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # fmt: skip
        (bad / name).write_bytes(b"not a gzip file")
    args = base_args(tmp_path, bad, trials=2)
    args[args.index("--workers") + 1] = "2"
    proc = subprocess.run(
        [sys.executable, "-m", "explorer.search", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "stopped:" in x)
    assert "Traceback" not in proc.stderr
    log = Path(line.split("traceback in ")[1].split(")")[0])
    assert log.is_file() and "Traceback" in log.read_text()


def test_designs_over_a_parameter_limit_are_recorded_not_trained(tmp_path, tiny_fmnist, capsys):
    args = [*base_args(tmp_path, tiny_fmnist, trials=2), "--max-params", "20000"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    assert study.user_attrs["config"]["constraints"] == {"params": 20000.0}
    records = study_records(study)
    refs = [r for r in records if r.reference]
    assert all(r.val_acc is not None and r.params > 20000 for r in refs)  # trained anyway
    for r in records:
        if r.reference or r.state != "COMPLETE":
            continue
        if r.params > 20000:
            assert r.skipped and r.val_acc is None and r.train_time_s is None
            assert r.constraint_values[0] > 0
        else:
            assert r.skipped is None and r.val_acc is not None
    trained = [r for r in records if not r.reference and r.state == "COMPLETE" and not r.skipped]
    assert len(trained) + sum(r.state == "PRUNED" for r in records) == 2  # skips do not count
    assert any(r.skipped for r in records)  # the limit was met, not just never reached
    assert "limits: params <= 20,000" in out
    from explorer.analysis import pareto_front

    assert all(r.params <= 20000 for r in pareto_front(records))


def test_a_journal_made_on_another_machine_is_warned_about_once(tmp_path):
    from explorer.store import check_journal_host

    url = str(tmp_path / "s.journal")
    assert check_journal_host(url) is None  # first open: this machine is recorded
    assert check_journal_host(url) is None  # the same machine again
    (tmp_path / "s.journal.host").write_text("another-boot-id otherhost\n")
    warning = check_journal_host(url)
    assert warning is not None and "otherhost" in warning and "PostgreSQL" in warning
    assert "\n" not in warning


def test_a_trial_no_worker_ever_claimed_is_recovered_after_the_grace_period(tmp_path, monkeypatch):
    """A worker that died between Optuna's ask and its first write leaves a RUNNING trial with no
    worker id; once the grace period has passed it is failed as interrupted and retried."""
    from explorer.store import stale  # the module whose grace period the test shortens

    url = str(tmp_path / "s.journal")
    study = optuna.create_study(study_name="o", storage=open_storage(url),
                                directions=["maximize", "minimize"])  # fmt: skip
    study_mod.enqueue_reference(study, "v1")
    orphan = study.ask()
    assert recover(study, url) == []  # just started: its worker may be about to write
    monkeypatch.setattr(stale, "ORPHAN_GRACE_S", 0)
    assert recover(study, url) == [orphan.number]
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == orphan.number]
    assert "no worker claimed it" in retry.user_attrs["retry_reason"]


# A space of four designs (batch norm or not, max or average pooling), for the count of distinct
# designs: a sampler soon proposes a design it has already trained.
TINY_SPACE = search_space.SearchSpace(
    dimensions=(
        search_space.Dimension("bn", choices=("none", "post")),
        search_space.Dimension("pool_type", choices=("max", "avg")),
    ),
    fixed={"stride": 1, "ch1x1": 16, "ch3x3_reduce": 16, "ch3x3": 16, "wide_reduce": 16,
           "wide": 16, "pool_proj": 16, "wide_kind": "5x5", "asym_n": 7},
)  # fmt: skip


@pytest.mark.parametrize("trials", [4, 6])
def test_trials_counts_distinct_designs_and_a_spent_space_ends_in_one_line(
    trials, tmp_path, tiny_fmnist, monkeypatch, capsys
):
    monkeypatch.setattr(objective, "DEFAULT_SPACE", TINY_SPACE)
    args = [*base_args(tmp_path, tiny_fmnist, trials=trials), "--no-references", "--seed", "3"]
    assert search.main(args) == 0
    err = capsys.readouterr().err
    study = optuna.load_study(study_name="t", storage=open_storage(str(tmp_path / "s.journal")))
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    distinct = {tuple(sorted(t.params.items())) for t in done}
    originals = [t for t in done if "duplicate_of" not in t.user_attrs]
    copies = [t for t in done if "duplicate_of" in t.user_attrs]
    assert len(distinct) == len(originals) == 4  # each design trained once
    for copy in copies:  # a copy is told to the sampler with its twin's result
        twin = study.trials[copy.user_attrs["duplicate_of"]]
        assert copy.params == twin.params and copy.values == twin.values
    spent = "proposals were all designs already trained"
    if trials == 4:
        assert search.search_trials_taken(study) == 4 and spent not in err
    else:  # six asked for, four exist: it ends after 25 copies in a row, and says so
        assert len(copies) >= search.COPIES_IN_A_ROW and search.out_of_new_designs(study)
        assert "the study holds 4 distinct search designs of the 6 asked for" in err


def test_a_new_study_searches_one_budget_with_tpe_by_default():
    """The default strategy, measured against random search and three rungs on a 2-core CPU
    (BENCHMARKS.md, "Search strategies at equal wall time"): single-budget TPE at quick,
    standard on CUDA, its claims against v1/v2 raced up to 8 seeds."""
    s = search.SearchSettings()
    assert s.new_rungs[0] == 1 and s.verify_seeds == search.DEFAULT_CAP == 8
    assert s.verify_budget is None
    config = search.new_config(s, default_budget("cpu", *s.new_rungs))
    assert (config.rungs, config.budget, config.sampler) == (1, "quick", "tpe")
    assert default_budget("cuda", *s.new_rungs) == "standard"
    # studies/cpu-default.toml writes the same study out.
    written = search.parse_settings(["--config", str(ROOT / "studies" / "cpu-default.toml")])
    assert search.new_config(written, written.budget) == config
    default = search.parse_settings([])
    for field in ("trials", "workers", "references", "prune", "verify_seeds", "verify_budget"):
        assert getattr(written, field) == getattr(default, field), field


def test_rungs_fit_the_trials_and_the_budget():
    assert search.fitting_rungs(3, 3, 100, None) == (3, "")  # 100 designs keep three rungs
    fit, why = search.fitting_rungs(3, 3, 20, None)
    assert fit == 2 and "20 designs would bring 2.2 to the top rung" in why
    fit, why = search.fitting_rungs(3, 3, 20, 512)  # --budget smoke: 512 images per epoch
    assert fit == 1 and "a bottom rung of 170 images per epoch" in why
    assert search.fitting_rungs(2, 3, 100, 9216) == (2, "")
    assert search.fitting_rungs(3, 3, 45, None)[0] == 3  # 45 / 9 = 5 reach the top


def test_a_small_default_search_gives_a_real_answer_and_resumes(tmp_path, tiny_fmnist, capsys):
    """A smoke search of 3 trials with the default rungs (one budget, so nothing to cut down);
    resumed to 5 it reports 5 search designs, and the evaluator and the exporter find a searched
    design on its front."""
    storage = str(tmp_path / "s.journal")
    args = base_args(tmp_path, tiny_fmnist, trials=3, verify=True)  # the default verification
    del args[args.index("--rungs") : args.index("--rungs") + 2]  # the default rungs
    args += ["--seed", "0"]
    assert search.main(args) == 0
    err = capsys.readouterr().err
    assert "rung(s) instead of" not in err
    five = [*args[: args.index("--trials") + 1], "5", *args[args.index("--trials") + 2 :]]
    assert search.main(five) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="t", storage=open_storage(storage))
    assert study_config(study).rungs == 1 and search.search_trials_taken(study) == 5
    assert "study 't': 7 complete" in out  # 5 search designs and v1, v2
    # The default check of claims (--verify-seeds 8): this seeded front makes no claim against v1/v2,
    # so nothing is retrained and the summary states none.
    checks = search.verified_claims(study, study_config(study))
    assert checks == [] and reeval_results(study, search.VERIFY_PREFIX) == {}
    assert "scored above v1" not in out and "scored above v2" not in out
    assert any(" front " in line for line in out.splitlines())
    from explorer import evaluate, export  # the two commands a user runs next

    assert evaluate.main(["--storage", storage, "--study", "t", "--pareto", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    labels = listed.split("designs (", 1)[1].rsplit("),", 1)[0].split(", ")
    assert any(label.startswith("#") and "(" not in label for label in labels), listed
    target = tmp_path / "best.py"
    assert export.main(["--storage", storage, "--study", "t", "--best", "-o", str(target)]) == 0
    source = target.read_text()
    refs = {t.number for t in study.trials if "reference" in t.user_attrs}
    best = [t.number for t in study.trials if f"class Trial{t.number}Net" in source]
    assert best and not set(best) & refs  # a searched design, not a reference
