"""Per-stage designs and the network as a study setting, from the command line: a per-stage study
runs, resumes, refuses other network settings, shows its network in `info` and the summary, and
exports as code that rebuilds it bit for bit."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import optuna
import pytest
import torch

from explorer import cli as top_cli
from explorer import export, search
from explorer.analysis import study_records
from explorer.store import StudyConfig, open_storage
from search_space import DEFAULT_SPACE, REFERENCES, NetworkConfig, build_network, network_params
from search_space.references import v3_stage_designs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(module, args: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (less notes about renamed flags) of a command's `main`."""
    code = module.main(args)
    out, err = capsys.readouterr()
    err = "\n".join(line for line in err.splitlines() if "deprecated" not in line)
    return code, out, err


def _search_args(tmp_path: Path, data: Path, trials: int = 2, *extra: str) -> list[str]:
    """A one-rung smoke search on one worker, without proxies or verification (as test_search)."""
    return [
        "--trials", str(trials), "--budget", "smoke", "--rungs", "1", "--device", "cpu",
        "--data-dir", str(data), "--storage", str(tmp_path / "s.journal"), "--study", "ps",
        "--workers", "1", "--quiet", "--no-proxies", "--verify", "0", *extra,
    ]  # fmt: skip


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="ps", storage=open_storage(str(tmp_path / "s.journal")))


@pytest.fixture(scope="module")
def per_stage_study(tmp_path_factory, tiny_fmnist) -> Path:
    """A finished per-stage smoke study on three stages: v1, v2 and one search design."""
    folder = tmp_path_factory.mktemp("per_stage")
    # at an eighth of paper width, so three stages train in seconds
    args = _search_args(
        folder,
        tiny_fmnist,
        1,
        "--stages",
        "1,1,1",
        "--per-stage",
        "--stem",
        "64",
        "--width",
        "0.125",
    )
    assert search.main(args) == 0
    return folder


def test_per_stage_search_trains_a_design_per_stage(per_stage_study: Path) -> None:
    study = _study(per_stage_study)
    config = StudyConfig.from_study(study.user_attrs)
    assert (config.stages, config.stem_channels, config.per_stage) == ((1, 1, 1), 64, True)
    records = [r for r in study_records(study) if r.complete]
    assert {r.reference for r in records} >= {"v1", "v2", None}
    for r in records:
        net = r.network
        assert net.per_stage and len(net.stage_blocks) == 3, r.number
        assert (net.stages, net.stem_channels) == ((1, 1, 1), 64)
        assert r.params == network_params(net)
        trial = study.trials[r.number]
        assert {k.split(".")[0] for k in trial.params} == {"s0", "s1", "s2"}
        assert DEFAULT_SPACE.network_from_params(trial.params, net) == net
        if r.reference:
            assert net.designs == (REFERENCES[r.reference],) * 3


def test_per_stage_study_resumes(
    per_stage_study: Path, tiny_fmnist: Path, capsys, tmp_path
) -> None:
    # a copy, so the module's study stays as it was for the other tests
    (tmp_path / "s.journal").write_bytes((per_stage_study / "s.journal").read_bytes())
    code, out, err = _run(search, _search_args(tmp_path, tiny_fmnist, 2), capsys)
    assert code == 0, err
    assert (
        "network: stages 1,1,1 (blocks per stage), width 0.125, stem 64, one design per stage"
        in out
    )
    records = [r for r in study_records(_study(tmp_path)) if r.is_search and r.complete]
    assert len(records) == 2
    assert all(r.network.per_stage for r in records)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--stages", "1,1"], "was made with stages=1,1,1, not 1,1"),
        (["--stem", "96"], "was made with stem_channels=64, not 96"),
        (["--stages", "1,1", "--override"], "was made with stages=1,1,1, not 1,1"),
    ],
)
def test_a_resume_with_another_network_is_refused(
    per_stage_study: Path, tiny_fmnist: Path, capsys, extra: list[str], needle: str
) -> None:
    code, out, err = _run(search, _search_args(per_stage_study, tiny_fmnist, 3, *extra), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "network is fixed when it is made" in lines[0]


def test_a_shared_study_refuses_per_stage(tiny_fmnist: Path, tmp_path: Path, capsys) -> None:
    """A study made with the default network refuses --per-stage, --stages on resume (no training:
    the study is made with zero trials and no references)."""
    assert _run(search, _search_args(tmp_path, tiny_fmnist, 0, "--no-references"), capsys)[0] == 0
    config = StudyConfig.from_study(_study(tmp_path).user_attrs)
    assert (config.stages, config.stem_channels, config.per_stage) == ((1, 1), 96, False)
    for extra, needle in (
        (["--per-stage"], "was made with per_stage=False, not True"),
        (["--stages", "1,1,1"], "was made with stages=1,1, not 1,1,1"),
    ):
        code, _, err = _run(search, _search_args(tmp_path, tiny_fmnist, 0, *extra), capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    # the same network, said again, is no change
    code, _, err = _run(search, _search_args(tmp_path, tiny_fmnist, 0, "--stages", "1,1"), capsys)
    assert code == 0, err


def test_without_study_a_network_gets_its_own_default_study(
    tiny_fmnist: Path, tmp_path: Path, capsys
) -> None:
    """Without --study, --stages/--per-stage that differ from the default study's network start
    (then resume) that network's own study, named for it, instead of being refused; the default
    network still resumes the default study (no training: zero trials, no references)."""

    def search_(*extra: str) -> tuple[int, str]:
        args = [a for a in _search_args(tmp_path, tiny_fmnist, 0, "--no-references", *extra)]
        i = args.index("--study")
        del args[i : i + 2]
        code, _, err = _run(search, args, capsys)
        return code, err

    default = "fashion-mnist-inception-block"
    assert search_()[0] == 0
    code, err = search_("--stages", "1,1,1", "--per-stage")
    assert code == 0, err
    named = f"{default}-stages1-1-1-per-stage"
    assert f"study '{named}': the default name for this network, new" in err
    code, err = search_("--stages", "1,1,1", "--per-stage")  # the same network again: resumed
    assert code == 0 and f"study '{named}': the default name for this network (" in err, err
    code, err = search_("--stages", "1,1")  # the default network, said: the default study
    assert code == 0 and f"study '{default}'" in err, err
    storage = open_storage(str(tmp_path / "s.journal"))
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(storage)) == [default, named]
    made = StudyConfig.from_study(optuna.load_study(study_name=named, storage=storage).user_attrs)
    assert (made.stages, made.per_stage) == ((1, 1, 1), True)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--stages", "1,x"], "--stages: must be blocks per stage as integers"),
        (["--stages", ""], "--stages: must be blocks per stage as integers"),
        (["--stages", "1,0"], "every stage needs at least one block"),
        (["--stages", "1,1,1,1,1,1"], "too many downsamplings for image_size=28"),
        (["--stages", "1," * 9 + "1"], "--stages must be a list of 1..8"),
        (["--stem", "0"], "--stem must be an integer in 1..8192"),
    ],
)
def test_bad_network_flags(
    extra: list[str], needle: str, tiny_fmnist: Path, tmp_path: Path, capsys
) -> None:
    code, _, err = _run(search, _search_args(tmp_path, tiny_fmnist, 1, *extra), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "s.journal").exists() or not _study_names(tmp_path)


def _study_names(tmp_path: Path) -> list[str]:
    from explorer.store import study_names

    return study_names(str(tmp_path / "s.journal"))


def test_per_stage_references_with_v3(tiny_fmnist: Path, tmp_path: Path) -> None:
    """The references a per-stage study queues are placed per stage, and v3's per-grid layout is a
    point of the space under per-stage names."""
    from explorer.search import SearchSettings
    from explorer.search.study import enqueue_reference, open_search_study, skeleton

    s = SearchSettings(study="ps", stages=(1, 1, 1), per_stage=True, trials=0)
    url = str(tmp_path / "s.journal")
    study, config = open_search_study(s, open_storage(url), url, "smoke")
    enqueue_reference(study, "v3", config=config)
    queued = {t.user_attrs["reference"]: t for t in study.trials}
    assert sorted(queued) == ["v1", "v2", "v3"]
    params = queued["v3"].system_attrs["fixed_params"]
    net = DEFAULT_SPACE.network_from_params(params, skeleton(config))
    assert net.designs == v3_stage_designs(3)
    assert (
        DEFAULT_SPACE.network_from_params(
            queued["v2"].system_attrs["fixed_params"], skeleton(config)
        ).designs
        == (REFERENCES["v2"],) * 3
    )


def test_info_shows_each_study_network(per_stage_study: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("EXPLORER_STORAGE", str(per_stage_study / "s.journal"))
    code, out, _ = _run(top_cli, ["info"], capsys)
    assert code == 0
    assert (
        "  ps: stages 1,1,1 (blocks per stage), width 0.125, stem 64, one design per stage" in out
    )
    assert "network of a new study: stages 1,1 (blocks per stage), width 0.25, stem 96, " in out


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_per_stage_design_exports_and_rebuilds_bit_for_bit(
    per_stage_study: Path, tmp_path: Path, capsys
) -> None:
    study = _study(per_stage_study)
    record = next(r for r in study_records(study) if r.is_search and r.complete)
    out = tmp_path / "net.py"
    code, _, err = _run(
        export,
        ["--storage", str(per_stage_study / "s.journal"), "--study", "ps", "--trial",
         str(record.number), "-o", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    text = out.read_text()
    imports = {
        line.split()[1] for line in text.splitlines() if line.startswith(("import ", "from "))
    }
    assert imports == {"pathlib", "typing", "torch"}, imports  # torch and the standard library
    module = _load_module(out)
    model = getattr(module, f"Trial{record.number}Net")()
    reference = build_network(record.network)
    assert sum(p.numel() for p in model.parameters()) == network_params(record.network)
    # the trained weights, loaded into both: the exported class standardises its input itself
    from explorer.export.selection import trial_weights  # private on purpose: the stored weights
    from explorer.store import artifact_dir

    state = trial_weights(study, record.number, artifact_dir(str(per_stage_study / "s.journal")))
    reference.load_state_dict(state)
    model.load_state_dict(state)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (model.cfg.mean, model.cfg.std))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()((x - mean) / std))
    assert json.loads(json.dumps(record.network.to_dict()))["stage_blocks"]


def test_per_stage_design_exports_as_onnx(per_stage_study: Path, tmp_path: Path, capsys) -> None:
    """The trained per-stage design as ONNX: onnxruntime gives what PyTorch gives."""
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the onnx extra) is not installed")
    from explorer.export import export_design
    from explorer.export.files import trained_model  # private on purpose, as trial_weights
    from explorer.export.selection import trial_weights
    from explorer.store import artifact_dir

    storage = str(per_stage_study / "s.journal")
    study = _study(per_stage_study)
    record = next(r for r in study_records(study) if r.is_search and r.complete)
    output = tmp_path / "net.onnx"
    argv = ["--storage", storage, "--study", "ps", "--trial", str(record.number), "--format",
            "onnx", "-o", str(output)]  # fmt: skip
    code, _, err = _run(export, argv, capsys)
    assert code == 0, err
    model = trained_model(
        export_design(study, record.number),
        trial_weights(study, record.number, artifact_dir(storage)),
    )
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x).numpy()
    [got] = session.run(None, {"images": x.numpy()})
    assert abs(got - expected).max() < 1e-4


def test_the_optuna_cli_and_dashboard_read_a_per_stage_study(per_stage_study: Path) -> None:
    """Optuna's own command line lists the study's trials with their per-stage parameters, and
    optuna-dashboard serves them."""
    import subprocess
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    journal = str(per_stage_study / "s.journal")
    optuna_cli = Path(sys.executable).with_name("optuna")
    done = subprocess.run(
        [str(optuna_cli), "trials", "--storage", journal, "--storage-class", "JournalFileBackend",
         "--study-name", "ps", "-f", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    trials = json.loads(done.stdout)
    study = _study(per_stage_study)
    assert len(trials) == len(study.trials)
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert complete and all(
        {k.split(".")[0] for k in t["params"]} == {"s0", "s1", "s2"} for t in complete
    )

    app = wsgi(open_storage(journal))

    def get(path: str) -> tuple[str, bytes]:
        env: dict = {"PATH_INFO": path}
        setup_testing_defaults(env)
        status = []
        body = b"".join(app(env, lambda s, h, *a: status.append(s)))
        return status[0], body

    status, body = get("/api/studies")
    assert status.startswith("200")
    [summary] = json.loads(body)["study_summaries"]
    status, body = get(f"/api/studies/{summary['study_id']}")
    assert status.startswith("200")
    served = json.loads(body)["trials"]
    assert len(served) == len(study.trials)
    assert any(p["name"] == "s2.bn" for t in served for p in t["params"])


def _stored_design_study(tmp_path: Path, network: dict) -> str:
    """A journal with one complete trial that stores `network` as its design."""
    journal = str(tmp_path / "bad.journal")
    study = optuna.create_study(
        study_name="bad", storage=open_storage(journal), directions=["maximize", "minimize"]
    )
    study.set_user_attr("objectives", ["val_acc", "params"])
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.9, 100.0], user_attrs={"network": network, "val_acc": 0.9, "params": 100}
        )
    )
    return journal


V1, V2 = REFERENCES["v1"], REFERENCES["v2"]
THREE = NetworkConfig(block=V1, stages=(1, 1, 1)).with_designs((V1, V2, V1)).to_dict()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        # a stage count that does not match: two designs for three stages
        ({"stage_blocks": THREE["stage_blocks"][:2]}, "stage_blocks has 2 designs for 3 stages"),
        # a design from another network: the first stage's design is not the network's block
        ({"block": V2.to_dict()}, "block must equal stage_blocks[0]"),
        ({"stage_blocks": V1.to_dict()}, "stage_blocks must be a list of block configs"),
    ],
)
def test_a_bad_stored_per_stage_design_is_one_line(
    tmp_path: Path, capsys, change: dict, needle: str
) -> None:
    journal = _stored_design_study(tmp_path, {**THREE, **change})
    argv = ["--storage", journal, "--study", "bad", "--trial", "0", "-o", str(tmp_path / "x.py")]
    code, _, err = _run(export, argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "invalid stored design" in lines[0], err
    assert not (tmp_path / "x.py").exists()
