"""Tests of the dashboard: the pure data shaping and figures (`app.data`, `app.charts`) on small
seeded studies, and the page itself through Streamlit's `AppTest`, with good, empty and broken
storages. The real-browser check is in `test_browser.py`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app import ablation, charts, data, details, guard, verdicts
from explorer import export
from explorer.analysis import RULE, hypervolume_curve, pareto_front, study_records
from explorer.store import DEFAULT_STORAGE, TrialRecord, load_study, open_storage
from search_space import REFERENCES, NetworkConfig
from tests.helpers import make_ablation, make_study

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
N_SEARCH = 8
N_TRIALS = 2 + N_SEARCH + 1 + 1  # references, searched designs, one pruned, one failed


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    """A journal holding study ``demo`` (see `make_study`) and a second study ``other``."""
    storage = str(tmp_path_factory.mktemp("dashboard") / "explorer.journal")
    make_study(storage, "demo", n_search=N_SEARCH, seed=0, weights=False)
    make_study(storage, "other", n_search=3, seed=1, weights=False, pruned=0, failed=0)
    return storage


@pytest.fixture(scope="module")
def records(demo) -> list[TrialRecord]:
    return study_records(load_study(demo, "demo"))


def _record(number: int, state: str = "COMPLETE", **attrs) -> TrialRecord:
    block = attrs.pop("block", REFERENCES["v1"])
    stored = {"network": NetworkConfig(block=block).to_dict(), **attrs}
    return TrialRecord.from_dict(stored, number, state)


# ---------------------------------------------------------------------------------------------
# app.data and app.charts


def test_pareto_info_splits_states_references_and_front(records):
    info = data.pareto_info(records)
    assert list(info.by_state) == ["COMPLETE", "PRUNED", "FAIL"]
    assert [len(v) for v in info.by_state.values()] == [N_SEARCH, 1, 1]
    assert [p.label for p in info.references] == ["v1", "v2"]
    assert {p.number for p in info.front} == {r.number for r in pareto_front(records)}
    assert [p.x for p in info.front] == sorted(p.x for p in info.front)
    assert info.not_drawn == {}
    # pruned and failed trials sit at their last epoch's accuracy, and say so
    assert {p.note for p in info.by_state["PRUNED"] + info.by_state["FAIL"]} == {"last epoch"}


@pytest.mark.parametrize("x", data.X_AXES)
def test_front_is_taken_on_the_chosen_axis(records, x):
    info = data.pareto_info(records, x=x)
    expected = {r.number for r in pareto_front(records, ("val_acc", x))}
    assert {p.number for p in info.front} == expected
    assert info.x_key == x


def test_pareto_info_rejects_unknown_axes(records):
    with pytest.raises(ValueError, match="'depth'"):
        data.pareto_info(records, x="depth")
    with pytest.raises(ValueError, match="'loss'"):
        data.pareto_info(records, y="loss")


def test_pareto_figure_has_a_trace_per_state_the_front_and_labelled_references(records):
    info = data.pareto_info(records)
    fig = charts.pareto_figure(info)
    names = [t.name for t in fig.data]
    assert names == ["complete", "pruned", "failed", "Pareto front", "v1", "v2"]
    symbols = {t.name: t.marker.symbol for t in fig.data}
    assert len({symbols["complete"], symbols["pruned"], symbols["failed"]}) == 3
    for ref in ("v1", "v2"):
        trace = fig.data[names.index(ref)]
        assert tuple(trace.text) == (ref,) and "text" in trace.mode
    front = fig.data[names.index("Pareto front")]
    assert list(front.x) == sorted(front.x) and "lines" in front.mode
    # hover shows the design in short form; customdata[0] is the trial number for selection
    by_number = {r.number: r for r in records}
    for trace in fig.data:
        for row in trace.customdata:
            assert row[2] == by_number[row[0]].block.short()
    assert fig.layout.xaxis.type == "linear"
    assert charts.pareto_figure(data.pareto_info(records, log_x=True)).layout.xaxis.type == "log"


def test_front_2d_keeps_only_undominated_points():
    pts = [
        data.Point(i, x, y, f"#{i}", "", "COMPLETE")
        for i, (x, y) in enumerate([(1, 0.5), (2, 0.7), (2, 0.6), (3, 0.7), (4, 0.9)])
    ]
    assert [p.number for p in data.front_2d(pts)] == [0, 1, 4]


def test_reevaluated_view_uses_test_accuracy_with_error_bars():
    reeval = {
        "test_acc_mean": 0.9,
        "test_acc_std": 0.01,
        "test_acc": [0.89, 0.91],
        "seeds": 2,
        "budget": "quick",
    }
    records = [
        _record(0, reference="v1", params=100, val_acc=0.8, reeval=reeval),
        _record(1, params=50, val_acc=0.85, reeval={**reeval, "test_acc_mean": 0.7}),
        _record(2, params=80, val_acc=0.95),  # never re-evaluated: not drawn in this view
    ]
    assert data.has_reeval(records)
    info = data.pareto_info(records, y="reeval")
    assert [p.number for p in info.front] == [1, 0]
    assert info.not_drawn == {"COMPLETE": 1}
    fig = charts.pareto_figure(info)
    v1 = next(t for t in fig.data if t.name == "v1")
    assert v1.y == (0.9,) and tuple(v1.error_y.array) == (0.01,)
    assert data.trials_frame(records)["test_acc"].tolist()[:2] == [0.9, 0.7]


def test_trials_frame_has_one_row_per_trial_and_filters(records):
    frame = data.trials_frame(records)
    assert list(frame.columns) == list(data.TABLE_COLUMNS)
    assert frame["trial"].tolist() == list(range(N_TRIALS))
    assert frame.loc[frame["kind"] == "reference", "label"].tolist() == ["v1", "v2"]
    assert frame["on_front"].sum() == len(pareto_front(records))
    failed = data.filter_trials(frame, states=["FAIL"])
    assert failed["note"].tolist() == ["diverged: loss is nan at step 3"]
    assert len(data.filter_trials(frame, kinds=["reference"])) == 2
    assert len(data.filter_trials(frame, states=[], kinds=None)) == 0
    csv = data.filter_trials(frame, kinds=["search"]).to_csv(index=False)
    assert len(pd.read_csv(pd.io.common.StringIO(csv))) == N_TRIALS - 2


def test_a_stored_design_that_does_not_validate_is_shown_not_raised():
    bad = TrialRecord(
        number=3,
        state="COMPLETE",
        reference=None,
        network=None,
        params=10,
        val_acc=0.5,
        problem="invalid stored design: x",
    )
    frame = data.trials_frame([bad, _record(4, params=20, val_acc=0.6)])
    assert frame["design"].tolist()[0] == "invalid stored design: x"
    assert data.pareto_info([bad])  # drawn where it has values
    assert details.compare_frame(bad, bad)["differs"].sum() == 0


def test_progress_info(records):
    info = data.progress_info(records)
    assert info.hypervolume == hypervolume_curve(records)
    bests = [b for _, b in info.best_so_far]
    assert bests == sorted(bests) and len(bests) == N_SEARCH + 2
    assert list(info.references) == ["v1", "v2"]
    assert list(info.accuracy) == ["COMPLETE", "PRUNED", "FAIL"]
    assert [t.name for t in charts.accuracy_figure(info).data] == [
        "complete",
        "pruned",
        "failed",
        "best so far",
    ]
    assert len(charts.hypervolume_figure(info).data[0].x) == N_SEARCH + 2


def test_proxy_info_ranks_proxies_against_the_parameter_baseline(records):
    info = data.proxy_info(records)
    assert info.message is None and info.trials == N_SEARCH + 2
    # the demo's naswot follows accuracy, snip is noise; params is listed last, as the baseline
    assert list(info.correlations)[-1] == "params"
    assert info.correlations["naswot"] > 0.9 and abs(info.correlations["snip"]) < 0.7
    assert set(info.points) == {"naswot", "synflow", "snip"}
    assert len(charts.proxy_correlation_figure(info).data[0].x) == 4
    assert len(charts.proxy_scatter_figure(info, "naswot").data[0].x) == N_SEARCH + 2
    few = data.proxy_info(records[:4])
    assert few.correlations == {} and "at least 5 complete trials" in few.message


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    x, y = [3.0, 1.0, 2.0, 2.0, 5.0, 4.0], [0.1, 0.5, 0.2, 0.3, 0.9, 0.4]
    assert math.isclose(data.spearman(x, y), spearmanr(x, y).statistic, rel_tol=1e-12)
    assert math.isnan(data.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_importances_rank_the_search_parameters(demo):
    info = data.param_importances(load_study(demo, "demo"))
    assert info.message is None
    assert math.isclose(sum(info.importances.values()), 1.0, rel_tol=1e-6)
    assert set(info.importances) <= set(REFERENCES["v1"].to_dict())
    values = list(info.importances.values())
    assert values == sorted(values, reverse=True)
    assert [t.orientation for t in charts.importance_figure(info).data] == ["h"]


def test_importances_with_too_few_trials_give_a_message(demo):
    info = data.param_importances(load_study(demo, "other"), min_trials=20)
    assert info.importances == {} and "at least 20 complete trials (5 so far)" in info.message


def test_block_diagram_draws_every_branch_with_kernels_and_bn():
    v1 = details.block_diagram(REFERENCES["v1"], "v1")
    assert [b.name for b in v1.branches] == ["1x1", "3x3", "5x5", "max pool"]
    assert [[layer.label for layer in b.layers] for b in v1.branches] == [
        ["1x1 conv"],
        ["1x1 conv", "3x3 conv"],
        ["1x1 conv", "5x5 conv"],
        ["3x3 max pool", "1x1 conv"],
    ]
    assert v1.unit == "conv → ReLU" and v1.out == REFERENCES["v1"].out_channels(192) == 256
    v3 = details.block_diagram(REFERENCES["v3"])
    assert [layer.label for layer in v3.branches[2].layers] == ["1x1 conv", "1x7 conv", "7x1 conv"]
    assert v3.unit == "conv → BN → ReLU" and v3.branches[3].name == "avg pool"
    fig = charts.block_figure(v1)
    texts = " ".join(a.text for a in fig.layout.annotations)
    assert "5x5 conv" in texts and "max pool" in texts and "256 channels" in texts
    assert "conv → ReLU" in fig.layout.title.text


def test_block_diagram_marks_removed_branches():
    no_pool = REFERENCES["v1"].__class__(**{**REFERENCES["v1"].to_dict(), "pool_proj": 0})
    diagram = details.block_diagram(no_pool)
    assert diagram.branches[3].layers == () and diagram.out == 224
    assert any(
        "no max pool branch" in a.text for a in charts.block_figure(diagram).layout.annotations
    )


def test_compare_frame_marks_differences(records):
    frame = details.compare_frame(records[0], records[1])
    differs = set(frame.loc[frame["differs"], "field"])
    assert {"wide_kind", "bn", "pool_type", "val_acc", "params"} <= differs
    assert not {"ch1x1", "pool_proj", "stride"} & differs
    assert list(frame.columns) == ["group", "field", "v1", "v2", "differs"]


def test_curves_frame_and_metrics(records):
    pruned = next(r for r in records if r.state == "PRUNED")
    assert data.trial_note(pruned) == "pruned at epoch 1"
    assert data.trial_note(records[0]) is None
    curves = details.curves_frame(pruned)
    assert curves["epoch"].tolist() == [1] and list(curves.columns) == [
        "epoch",
        "train_loss",
        "val_loss",
        "val_acc",
    ]
    ragged = _record(0, curves={"epoch": [1, 2], "val_acc": [0.5, 0.6, 0.7]})
    assert details.curves_frame(ragged)["epoch"].tolist() == [1, 2, 3]
    assert details.curves_frame(_record(0)).empty
    metrics = dict(details.trial_metrics(records[0]).values.tolist())
    assert metrics["label"] == "v1" and metrics["params"] == f"{records[0].params:,}"
    assert "network" not in metrics and "curves" not in metrics
    assert len(charts.curves_figure(details.curves_frame(records[0])).data) == 3


def test_commands(tmp_path):
    assert data.search_command(DEFAULT_STORAGE) == "python -m explorer.search --trials 100"
    assert data.search_command("postgresql://me:secret@db/x", "s") == (
        "python -m explorer.search --trials 100 --storage 'postgresql://me:***@db/x' --study s"
    )
    assert data.export_command(DEFAULT_STORAGE, "demo", 4) == (
        "python -m explorer.export --study demo --trial 4 -o trial4.py"
    )


def test_export_button_code_is_what_the_cli_writes(demo, tmp_path, monkeypatch):
    from app import loaders

    study = load_study(demo, "demo")
    command = data.export_command(demo, "demo", 3)
    source, why = loaders.export_code(demo, "demo", 3, command, study)
    assert why is None
    monkeypatch.chdir(tmp_path)
    assert (
        export.main(["--study", "demo", "--storage", demo, "--trial", "3", "-o", "trial3.py"]) == 0
    )
    assert source == Path("trial3.py").read_text()
    source, why = loaders.export_code(demo, "demo", 999, command, study)
    assert source is None and "999" in why


# ---------------------------------------------------------------------------------------------
# The page, through AppTest


@pytest.fixture
def app(monkeypatch):
    """An AppTest of app/main.py with no storage or study preselected by the environment."""
    monkeypatch.delenv("EXPLORER_STORAGE", raising=False)
    monkeypatch.delenv("EXPLORER_STUDY", raising=False)
    monkeypatch.setattr("sys.argv", ["app/main.py"])

    def make(**env: str) -> AppTest:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return AppTest.from_file(APP, default_timeout=60)

    return make


def _figure(at: AppTest, index: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def _texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "error", "warning", "code")
        for e in getattr(at, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_page_opens_the_study_from_the_environment(app, demo):
    at = app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="demo").run()
    assert not at.exception
    assert at.title[0].value == "demo" and at.selectbox(key="study").value == "demo"
    assert at.metric[0].value == str(N_TRIALS)
    names = [t["name"] for t in _figure(at)["data"]]
    assert names == ["complete", "pruned", "failed", "Pareto front", "v1", "v2"]
    assert at.toggle(key="live").value is True  # follows a running search by default


def test_command_line_arguments_preselect_storage_and_study(app, demo, tmp_path, monkeypatch):
    second = str(tmp_path / "second.journal")
    make_study(second, "third", n_search=1, seed=2, weights=False, pruned=0, failed=0)
    argv = ["app/main.py", "--storage", demo, "--storage", second, "--study", "other"]
    monkeypatch.setattr("sys.argv", argv)
    at = app().run()
    assert not at.exception
    assert at.selectbox(key="storage").options == [demo, second]  # the storages given, no box
    assert not at.text_input
    assert at.title[0].value == "other" and at.metric[0].value == "5"
    at.selectbox(key="study").set_value("demo").run()
    assert at.title[0].value == "demo"
    at.selectbox(key="storage").set_value(1).run()
    assert at.selectbox(key="study").options == ["third"] and at.title[0].value == "third"


def test_an_unknown_study_falls_back_with_a_warning(app, demo):
    at = app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="nope").run()
    assert not at.exception and "No study named `nope`" in at.warning[0].value
    assert at.title[0].value in ("demo", "other")


def test_x_axis_and_log_scale_controls(app, demo):
    at = app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="demo").run()
    at.radio(key="x_axis").set_value("flops")
    at.toggle(key="log_x").set_value(True)
    at.run()
    layout = _figure(at)["layout"]
    assert layout["xaxis"]["type"] == "log" and "FLOPs" in layout["xaxis"]["title"]["text"]


@pytest.mark.parametrize(
    "tab", ["Verified claims", "Search progress", "Trials", "Trial details", "Compare"]
)
def test_every_tab_renders(app, demo, tab):
    at = app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="demo").run()
    at.session_state["view"] = tab
    at.run()
    assert not at.exception and not at.error
    if tab == "Search progress":
        titles = [_figure(at, i)["layout"]["title"]["text"] for i in range(5)]
        assert "hypervolume" in titles[0] and "importance" in titles[2]
        assert "rank correlation" in titles[3] and titles[4].startswith("naswot")
    elif tab == "Trials":
        assert at.dataframe[0].value.shape[0] == N_TRIALS
        assert [b.label for b in at.get("download_button")] == ["Download CSV"]
    elif tab == "Verified claims":  # the demo's claims were never verified
        assert "python -m explorer.search --study demo" in at.code[0].value
    elif tab == "Trial details":
        assert at.selectbox(key="detail_trial").value is not None
        assert any("conv" in a["text"] for a in _figure(at, 0)["layout"]["annotations"])
    else:
        assert at.selectbox(key="compare_a").value == 0  # v1
        assert "differs" in at.dataframe[0].value.columns


def test_trial_table_filters_by_state_and_kind(app, demo):
    at = app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="demo").run()
    at.session_state["view"] = "Trials"
    at.run()
    at.multiselect(key="filter_states").set_value(["COMPLETE"])
    at.multiselect(key="filter_kinds").set_value(["reference"])
    at.run()
    assert at.dataframe[0].value["label"].tolist() == ["v1", "v2"]


def _open(at: AppTest, number: int) -> AppTest:
    """What selecting a trial's point in the chart or its row in the table does."""
    at.session_state["detail_trial"] = number
    at.session_state["view"] = "Trial details"
    return at.run()


def test_opening_a_trial_shows_its_drawing_curves_and_metrics(app, demo):
    at = _open(app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="demo").run(), N_TRIALS - 1)
    assert not at.exception
    assert at.selectbox(key="detail_trial").value == N_TRIALS - 1
    assert "diverged" in at.warning[0].value
    assert len(at.get("plotly_chart")) == 2  # the block and its learning curves
    assert "fail_reason" in at.dataframe[0].value["metric"].tolist()


def test_the_code_button_downloads_a_complete_design(app, demo):
    at = _open(app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="demo").run(), 3)
    assert [b.label for b in at.get("download_button")] == ["Download PyTorch code"]
    assert f"python -m explorer.export --study demo --storage {demo} --trial 3" in _texts(at)
    at = _open(at, N_TRIALS - 1)  # the failed trial: the exporter's reason instead of a button
    assert not at.get("download_button") and "cannot export trial" in _texts(at)


def test_the_page_follows_a_running_search(app, tmp_path):
    storage = str(tmp_path / "live.journal")
    study = make_study(storage, "live", n_search=2, seed=4, weights=False, pruned=0, failed=0)
    at = app(EXPLORER_STORAGE=storage).run()
    assert at.metric[0].value == "4"
    assert not data.has_reeval(study_records(study))
    donor = study.trials[2]
    reeval = {
        "test_acc_mean": 0.8,
        "test_acc_std": 0.02,
        "test_acc": [0.78, 0.82],
        "seeds": 2,
        "budget": "quick",
    }
    study.add_trial(
        optuna.trial.create_trial(
            params=donor.params,
            distributions=donor.distributions,
            values=donor.values,
            user_attrs={**donor.user_attrs, "reeval": reeval},
        )
    )
    at.run()
    assert at.metric[0].value == "5"
    at.radio(key="y_axis").set_value("reeval").run()
    fig = _figure(at)
    assert "re-evaluated" in fig["layout"]["yaxis"]["title"]["text"]
    assert [t["name"] for t in fig["data"]] == ["complete", "Pareto front"]


@pytest.mark.parametrize("case", ["missing", "empty_file", "no_trials"])
def test_an_empty_or_missing_study_shows_the_search_command(app, tmp_path, case):
    storage = str(tmp_path / "studies" / "explorer.journal")
    if case != "missing":
        Path(storage).parent.mkdir()
        Path(storage).touch()
    if case == "no_trials":
        optuna.create_study(study_name="fresh", storage=open_storage(storage))
    at = app(EXPLORER_STORAGE=storage).run()
    assert not at.exception and not at.error
    assert at.code[0].value.startswith("python -m explorer.search --trials 100")
    assert at.info


@pytest.mark.parametrize("case", ["garbage", "binary", "folder", "postgres", "scheme"])
def test_an_unreadable_storage_shows_one_clear_error(app, tmp_path, caplog, case):
    storage = {
        "garbage": tmp_path / "garbage.journal",
        "binary": tmp_path / "binary.journal",
        "folder": tmp_path,
        "postgres": "postgresql://explorer:secret@127.0.0.1:1/studies",
        "scheme": "ftp://host/studies",
    }[case]
    if case == "garbage":
        storage.write_text('this is not a journal\n{"op_code": 99\n')
    if case == "binary":
        # more than one line: a journal reader skips an unreadable last line as a torn write
        storage.write_bytes(b"\x00\xff\xfe garbage \x80\n\x89PNG\r\n")
    at = app(EXPLORER_STORAGE=str(storage)).run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert message.startswith(f"Cannot read the study storage `{guard.shown(str(storage))}`")
    assert "\n" not in message
    assert "Traceback" not in _texts(at) and "secret" not in _texts(at)
    # why is for whoever started the dashboard: in the server's log
    assert f"cannot read the study storage {guard.shown(str(storage))}: " in caplog.text


def test_a_journal_started_afresh_is_read_from_its_start(app, tmp_path):
    storage = tmp_path / "explorer.journal"
    make_study(str(storage), "first", n_search=1, seed=5, weights=False, pruned=0, failed=0)
    at = app(EXPLORER_STORAGE=str(storage)).run()
    assert at.title[0].value == "first"
    storage.unlink()
    make_study(str(storage), "second", n_search=2, seed=6, weights=False, pruned=0, failed=0)
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [] and at.selectbox(key="study").options == ["second"]
    assert at.title[0].value == "second" and at.metric[0].value == "4"


def test_block_drawing_shows_the_trained_channel_counts_per_stage():
    net = NetworkConfig(block=REFERENCES["v1"], width=0.25)
    record = TrialRecord.from_dict({"network": net.to_dict()}, 7, "COMPLETE")
    stages = details.stage_diagrams(record)
    assert len(stages) == len(net.stages)
    for i, diagram in enumerate(stages):
        scaled = net.stage_block(i)
        assert [b.out for b in diagram.branches] == [
            scaled.ch1x1,
            scaled.ch3x3,
            scaled.wide,
            scaled.pool_proj,
        ]
        assert f"stage {i + 1}" in diagram.title
    assert stages[0].branches[0].out == round(64 * 0.25) and stages[1].branches[0].out == 32


# ---------------------------------------------------------------------------------------------
# The Ablation tab


@pytest.fixture(scope="module")
def ablated(tmp_path_factory) -> str:
    """A journal whose study ``demo`` has a stored v1 -> v2 ladder and a leave-one-out."""
    storage = str(tmp_path_factory.mktemp("ablated") / "explorer.journal")
    make_study(storage, "demo", n_search=N_SEARCH, seed=0, weights=False)
    make_ablation(storage, "demo", seeds=3)
    return storage


def test_waterfall_bars_stack_the_main_steps_from_start_to_end(ablated):
    (path, loo) = ablation.measured_ladders(load_study(ablated, "demo"))
    bars = ablation.bars(path, "val")
    assert [b.label for b in bars] == ["v1", "batch norm", "factorized wide path",
                                       "branch widths", "pool type", "v2"]  # fmt: skip
    for before, after in zip(bars[1:-1], bars[2:-1], strict=False):
        assert after.base == pytest.approx(before.base + before.delta)
    assert bars[0].delta == pytest.approx(path.means[0][0])  # v1's mean over the seeds
    assert bars[1].distinguishable and bars[1].delta > 0.05  # batch norm is what helps here
    assert bars[-1].delta == pytest.approx(bars[-2].base + bars[-2].delta)  # all seeds paired
    fig = charts.waterfall_figure(bars, "v1 -> v2")
    assert fig.data[0].error_y.array == tuple(b.half for b in bars)  # each step's interval
    step = bars[1]
    low, high = step.verdict.interval
    assert step.half == pytest.approx((high - low) / 2) and bars[0].half == 0.0
    # the steps in the one colour of their verdict's word, the totals in their own
    assert list(fig.data[0].marker.color) == [
        charts.TOTAL_COLOR if b.step is None else verdicts.verdict_color(b.word) for b in bars
    ]
    assert fig.data[0].marker.color[1] == verdicts.VERDICT_COLORS["better"]
    assert fig.data[1].name == "parameters" and fig.data[1].yaxis == "y2"
    assert all(b.base == 0 for b in ablation.bars(loo, "test"))  # each part's worth from zero


def test_disagreement_names_the_groups_where_answers_part(ablated):
    (path, _) = ablation.measured_ladders(load_study(ablated, "demo"))
    line = ablation.disagreement(path, {"pool_type": 0.6, "bn": 0.1, "ch1x1": 0.3})
    assert "batch norm worth most" in line and "pool type first (0.60)" in line
    assert "Both answers rank batch norm first" in ablation.disagreement(path, {"bn": 0.9})


def test_ablation_tab_draws_the_ladder_and_the_two_designs_of_a_step(app, ablated):
    at = app(EXPLORER_STORAGE=ablated, EXPLORER_STUDY="demo").run()
    at.session_state["view"] = "Ablation"
    at.run()
    assert not at.exception and not at.error
    titles = [_figure(at, i)["layout"]["title"]["text"] for i in range(2)]
    assert titles[0] == "v1 -> v2" and "importance" in titles[1]
    (table,) = [d.value for d in at.dataframe if "Δ val acc" in d.value.columns]
    assert len(table) == 6 and table["step"][0] == "1. batch norm: none -> post"
    assert " seeds: " in table["Δ val acc"][0]  # the verdict rule's words, with its interval
    assert RULE in _texts(at)  # stated where the verdicts are shown
    at.session_state["ablation_step"] = 3  # what clicking a step's bar does
    at.run()
    drawn = [_figure(at, i)["layout"]["title"]["text"] for i in range(2, 4)]
    assert drawn[0].startswith("v1 +factorization ·")
    assert drawn[1].startswith("v1 +bn +factorization ·")
    at.selectbox(key="ablation_ladder").set_value(1).run()
    assert "leave-one-out" in _figure(at, 0)["layout"]["title"]["text"]


def test_ablation_tab_without_ablations_names_the_command(app, demo):
    at = app(EXPLORER_STORAGE=demo, EXPLORER_STUDY="demo").run()
    at.session_state["view"] = "Ablation"
    at.run()
    assert not at.exception
    assert "python -m explorer.ablate --study demo" in _texts(at)


# ---------------------------------------------------------------------------------------------
# A per-stage study: each stage its own design

PER_STAGE = (1, 1, 1)


@pytest.fixture(scope="module")
def per_stage(tmp_path_factory) -> str:
    """A journal whose study ``demo`` searched one design per stage of a three-stage network,
    with a stored ablation (its ladders go stage by stage)."""
    storage = str(tmp_path_factory.mktemp("per_stage") / "explorer.journal")
    make_study(storage, "demo", n_search=4, weights=False, stages=PER_STAGE, per_stage=True)
    make_ablation(storage, "demo", seeds=3)
    return storage


def test_a_per_stage_design_is_labelled_and_compared_stage_by_stage(per_stage):
    records = study_records(load_study(per_stage, "demo"))
    searched = next(r for r in records if r.is_search and r.network is not None)
    assert data.design(searched) == searched.network.short() and "s2[" in data.design(searched)
    lines = details.design_lines(searched).splitlines()
    assert [line.split(":")[0] for line in lines] == ["stage 1", "stage 2", "stage 3"]
    frame = details.compare_frame(records[0], searched)
    assert list(dict.fromkeys(frame["group"]))[:3] == ["stage 1", "stage 2", "stage 3"]
    row = data.trials_frame(records).set_index("trial").loc[searched.number]
    assert row["bn"] == "/".join(d.bn for d in searched.network.designs)
    diagrams = details.stage_diagrams(searched)
    for s, diagram in enumerate(diagrams):  # each stage drawn from its own design
        assert diagram.branches[1].out == searched.network.stage_block(s).ch3x3
        assert "its own design" in diagram.title


def test_a_per_stage_study_renders_its_front_details_and_compare(app, per_stage):
    at = app(EXPLORER_STORAGE=per_stage, EXPLORER_STUDY="demo").run()
    assert not at.exception and not at.error
    names = [t["name"] for t in _figure(at)["data"]]
    assert "Pareto front" in names and "v1" in names and "v2" in names
    records = study_records(load_study(per_stage, "demo"))
    searched = next(r for r in records if r.is_search and r.network is not None)
    at = _open(at, searched.number)
    assert not at.exception and not at.error
    assert at.radio(key="detail_stage").options == ["stage 1", "stage 2", "stage 3"]
    assert "stage 3: " in at.code[0].value
    at.radio(key="detail_stage").set_value(2).run()
    assert "stage 3 of 3 (its own design)" in _figure(at, 0)["layout"]["title"]["text"]
    at.session_state["view"] = "Compare"
    at.run()
    assert not at.exception and not at.error
    (compared,) = [d.value for d in at.dataframe if "differs" in d.value.columns]
    assert {"stage 1", "stage 2", "stage 3"} <= set(compared["group"])
    assert len(at.get("plotly_chart")) >= 6  # two designs, three stages each
    at.session_state["view"] = "Ablation"
    at.run()
    assert not at.exception and not at.error
    (table,) = [d.value for d in at.dataframe if "Δ val acc" in d.value.columns]
    assert table["step"][0].startswith("1. stage ")


def test_importances_of_a_per_stage_study_sum_over_stages_into_groups():
    found = ablation.group_importances(
        {"s0.bn": 0.25, "s2.bn": 0.25, "s1.wide_kind": 0.5, "x.y": 1}
    )
    assert found == {"bn": 0.5, "factorization": 0.5}
    assert ablation.group_importances({"bn": 0.3, "ch1x1": 0.2}) == {"bn": 0.3, "widths": 0.2}
