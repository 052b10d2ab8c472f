"""A study written before `StudyConfig` and `TrialRecord` existed still opens everywhere.

`tests/fixtures/legacy-study/` was written by the search as it was at commit 22fac63 (the last
version that kept each study setting under its own attribute): ``python -m explorer.search
--trials 2 --budget smoke --device cpu --data-dir <tests' synthetic Fashion-MNIST> --study legacy
--workers 1 --no-references --seed 3``, with its trained weights. Each test works on a copy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from explorer import search
from explorer.analysis import pareto_front, study_records
from explorer.store import StudyConfig, load_study, open_storage

FIXTURE = Path(__file__).parent / "fixtures" / "legacy-study"


@pytest.fixture
def legacy(tmp_path) -> str:
    shutil.copytree(FIXTURE, tmp_path / "legacy")
    return str(tmp_path / "legacy" / "explorer.journal")


def test_its_settings_read_as_a_legacy_config(legacy):
    study = load_study(legacy, "legacy")
    config = StudyConfig.from_study(study.user_attrs)
    assert config is not None and config.legacy
    assert (config.dataset, config.budget, config.split_seed, config.train_seed) == (
        "fashion-mnist",
        "smoke",
        3,
        3,
    )
    assert config.objectives == ("val_acc", "params") and config.width == 0.25


def test_its_trials_read_as_records(legacy):
    records = study_records(load_study(legacy, "legacy"))
    assert [r.state for r in records] == ["COMPLETE", "COMPLETE"]
    for r in records:
        assert r.network is not None and r.params > 0 and 0 < r.val_acc <= 1
        assert r.weights and r.curves["val_acc"] and r.seed == 3 and r.budget == "smoke"
    assert pareto_front(records)


def test_summary_and_dashboard_data_open_it(legacy):
    from app import data, details

    study = load_study(legacy, "legacy")
    text = search.summary(study, legacy)
    assert "study 'legacy': 2 complete" in text
    records = study_records(study)
    frame = data.trials_frame(records)
    assert len(frame) == 2 and frame["params"].notna().all()
    assert data.study_summary(records).n_trials == 2
    assert not details.trial_metrics(records[0]).empty


def test_export_writes_a_working_model_from_it(legacy, tmp_path, capsys):
    from explorer.export import main as export_main

    out = tmp_path / "best.py"
    code = export_main(
        ["--storage", legacy, "--study", "legacy", "--best", "--weights", "-o", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    check = (
        "import importlib.util, torch, sys;"
        f"spec = importlib.util.spec_from_file_location('best', {str(out)!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
        "loader = next(getattr(m, n) for n in dir(m) if n.startswith('load_trial'));"
        "print(loader()(torch.rand(2, 1, 28, 28)).shape)"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", check], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "torch.Size([2, 10])" in proc.stdout, proc.stderr


def test_it_resumes_under_its_own_settings(legacy, tiny_fmnist, capsys):
    args = ["--storage", legacy, "--study", "legacy", "--trials", "3", "--device", "cpu",
            "--data-dir", str(tiny_fmnist), "--workers", "1", "--quiet", "--no-proxies",
            "--verify-seeds", "0"]  # fmt: skip
    assert search.main(args) == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="legacy", storage=open_storage(legacy))
    # the seeded sampler proposes the two old designs again first: copies reuse their results and
    # do not count, so the study ends with three distinct designs
    assert search.search_trials_taken(study) == 3
    (new,) = [t for t in study.trials[2:] if "duplicate_of" not in t.user_attrs]
    assert new.user_attrs["budget"] == "smoke" and new.user_attrs["seed"] == 3
    assert all(study.trials[t.user_attrs["duplicate_of"]].params == t.params
               for t in study.trials[2:] if "duplicate_of" in t.user_attrs)  # fmt: skip
    code = search.main([*args, "--seed", "4"])
    assert code == 2 and "made with split_seed=3" in capsys.readouterr().err
