"""The dashboard: ``inception-explorer dashboard [--storage URL ...] [--study NAME]``, or in a
checkout ``streamlit run app/main.py --server.address 127.0.0.1 [-- --storage URL --study NAME]``.

Offers the storages given by ``--storage`` (repeatable) / ``EXPLORER_STORAGE`` (default
``studies/explorer.journal``) and opens the study given by ``--study`` / ``EXPLORER_STUDY``, else
the newest there; the sidebar switches between those storages and their studies. Visitors open
nothing else, unless the launch lets them type a storage (``--allow-dir``, ``--allow-host``), and
with ``EXPLORER_DASHBOARD_TOKEN`` set the page asks for that token first: see `app.guard`, which
also says how text read from a study is shown (as plain text). The page only arranges layout:
data comes from `app.loaders` (cached reads), tables and infos from `app.data` and `app.verdicts`
(the search's claims and their verification), figures from `app.charts`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

if __package__ in (None, ""):
    # `streamlit run` executes this file as a script; name its package so that the relative
    # imports below work (PEP 366): `app` in a checkout, whose root streamlit does not put on the
    # path, or `explorer.dashboard` where the distribution installed it.
    if Path(__file__).resolve().parent.name == "app":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        __package__ = "app"
    else:
        __package__ = "explorer.dashboard"

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from explorer.analysis import RULE  # noqa: E402
from explorer.search import VERIFY_FACTOR  # noqa: E402
from explorer.store import StorageError, StorageUnavailable, TrialRecord  # noqa: E402

from . import ablation, charts, data, details, guard, loaders, verdicts  # noqa: E402
from .guard import code, md  # noqa: E402

TABS = ("Pareto front", "Verified claims", "Search progress", "Trials", "Trial details",
        "Compare", "Ablation")  # fmt: skip
X_LABELS = {"params": "parameters", "flops": "FLOPs", "latency_ms": "latency"}
REFRESH_SECONDS = (5, 15, 30, 60)
WAIT_SECONDS = 5  # how often an empty page looks for a search that has started
# Why a storage could not be read goes to the server's log, for whoever started the dashboard:
# the page says only which storage, so that no error echoes a file or a password to a visitor.
log = logging.getLogger("inception_explorer.dashboard")


def main() -> None:
    st.set_page_config(page_title="Inception block explorer", page_icon="🧩", layout="wide")
    launch = guard.launch_from_args(sys.argv[1:])
    if launch.token is not None and not _signed_in(launch.token):
        return
    with st.sidebar:
        st.header("Inception block explorer")
        storage = _storage_picker(launch)
    try:
        names = loaders.list_studies(storage)
    except loaders.NoStorage:
        return _empty_state(
            storage, launch.study, f"There is no study storage at {code(guard.shown(storage))} yet."
        )
    except (StorageError, StorageUnavailable) as exc:
        return _storage_error(storage, exc)
    if not names:
        return _empty_state(
            storage, launch.study, f"The storage {code(guard.shown(storage))} holds no study yet."
        )

    wanted = launch.study
    if st.session_state.get("study") not in names:
        st.session_state["study"] = wanted if wanted in names else names[-1]
    with st.sidebar:
        study_name = st.selectbox("Study", names, key="study")
        if wanted and wanted not in names:
            st.warning(f"No study named {code(wanted)} here; showing {code(study_name)}.")
        live = st.toggle(
            "Live refresh",
            value=True,
            key="live",
            help="Re-read the study while a search is running",
        )
        every = st.select_slider(
            "Refresh every (s)", REFRESH_SECONDS, value=15, key="every", disabled=not live
        )
    st.fragment(study_view, run_every=every if live else None)(storage, study_name)


def _signed_in(token: str) -> bool:
    """Whether this browser session has given the access token (in the link, ``?token=``, or
    typed); asks for it otherwise."""
    if st.session_state.get("signed_in"):
        return True
    given = st.query_params.get("token")
    if given is not None and guard.token_ok(given, token):
        st.session_state["signed_in"] = True
        return True
    st.title("Inception block explorer")
    st.info(
        "This dashboard asks for its access token: open the link printed where it was started, "
        "or type the token here.",
        icon="🔒",
    )
    typed = st.text_input("Access token", type="password", key="token_input")
    if typed and guard.token_ok(typed, token):
        st.session_state["signed_in"] = True
        st.rerun()
    if typed or given is not None:
        st.error("That is not this dashboard's access token.", icon="⚠️")
    return False


def _storage_picker(launch: guard.Launch) -> str:
    """The storage to show: one of those given at launch, or the one the visitor typed where the
    launch allows typing one."""
    if st.session_state.get("storage") not in range(len(launch.storages)):
        st.session_state["storage"] = 0
    chosen = st.selectbox(
        "Storage",
        range(len(launch.storages)),
        format_func=lambda i: guard.shown(launch.storages[i]),
        key="storage",
        disabled=len(launch.storages) == 1,
        help="The storages this dashboard was started with (inception-explorer dashboard "
        "--storage ..., repeatable)",
    )
    if not launch.typing_allowed:
        return launch.storages[chosen]
    where = []
    if launch.allow_dir is not None:
        where.append(f"a journal or SQLite file under {launch.allow_dir}")
    if launch.allow_hosts:
        where.append(f"a database URL on {', '.join(launch.allow_hosts)}")
    typed = st.text_input(
        "Another storage",
        key="typed_storage",
        help=f"{' or '.join(where)}; leave empty for the storage above",
    ).strip()
    if not typed:
        return launch.storages[chosen]
    try:
        return guard.typed_storage(typed, launch)
    except guard.Refused as exc:
        st.error(f"Not opened: {md(exc)}.", icon="⚠️")
        return launch.storages[chosen]


def _storage_error(storage: str, exc: StorageError | StorageUnavailable) -> None:
    log.warning("cannot read the study storage %s: %s", guard.shown(storage), exc)
    st.error(
        f"Cannot read the study storage {code(guard.shown(storage))}: the log of the server "
        "that serves this page says why.",
        icon="⚠️",
    )


def study_view(storage: str, study_name: str) -> None:
    """Everything below the sidebar; re-run on its own by the live refresh."""
    try:
        loaded = loaders.load(storage, study_name)
    except (StorageError, StorageUnavailable) as exc:
        log.warning("cannot read study %r of %s: %s", study_name, guard.shown(storage), exc)
        st.error(f"Cannot read study {code(study_name)}: the server's log says why.", icon="⚠️")
        return
    config = loaded.config
    st.title(md(study_name))
    if loaded.problem:
        st.warning(f"This study is shown without its settings: {md(loaded.problem)}.", icon="⚠️")
    settings = (
        config and config.dataset,
        config and f"budget {config.budget}",
        config and config.rungs > 1 and f"{config.rungs} rungs, eta {config.eta}",
        config and f"width {config.width:g}",
    )
    st.caption(
        " · ".join([*(md(p) for p in settings if p), f"storage {code(guard.shown(storage))}"])
    )
    top = loaded  # the study itself: its ablations and claims belong to it, whichever rung is shown
    rung = None
    if loaded.rung_studies:
        # Every view below shows one rung; the top rung (the study's result) by default.
        rungs = sorted(loaded.rung_studies, reverse=True)
        rung = st.radio(
            "Rung",
            rungs,
            format_func=lambda k: md(data.rung_label(config, k)),
            horizontal=True,
            key="rung",
            help="Successive halving: new designs train at rung 0, the best 1/eta of each "
            "rung are retrained at the next. v1 and v2 train at every rung.",
        )
        loaded = loaded.rung(rung)
        study_name = loaded.study.study_name
    records = loaded.records
    if not records:
        # this view is live already: it shows the first trial when it comes
        return _empty_state(
            storage, study_name, f"Study {code(study_name)} has no trials yet.", watch=False
        )
    summary = data.study_summary(records, config)
    _summary_row(summary, records)
    verification, problem = loaders.verification(storage, top)
    if problem:
        log.warning("cannot replay the verification of study %r: %s", top.study.study_name, problem)
    # The claims are the top rung's, and trial numbers are a rung's own: a lower rung shows none.
    here = verification if loaded.study is top.study else None

    tabs = dict(zip(TABS, st.tabs(TABS, key="view", on_change="rerun"), strict=True))
    if tabs["Pareto front"].open:
        with tabs["Pareto front"]:
            _pareto_tab(records, config, here, data.front_budget(config, rung))
    if tabs["Verified claims"].open:
        with tabs["Verified claims"]:
            _verified_tab(verification, problem, data.front_budget(config, None))
    if tabs["Search progress"].open:
        with tabs["Search progress"]:
            _progress_tab(storage, study_name, loaded, config)
    if tabs["Trials"].open:
        with tabs["Trials"]:
            _trials_tab(records, study_name, config, here)
    if tabs["Trial details"].open:
        with tabs["Trial details"]:
            _details_tab(storage, study_name, loaded, summary.best, here)
    if tabs["Compare"].open:
        with tabs["Compare"]:
            _compare_tab(records, summary.best, here)
    if tabs["Ablation"].open:
        with tabs["Ablation"]:
            _ablation_tab(storage, top)


def _empty_state(storage: str, study: str | None, what: str, watch: bool = True) -> None:
    st.title("Inception block explorer")
    st.info(f"{what} Start a search, and this page shows it as it runs:", icon="ℹ️")
    st.code(data.search_command(storage, study), language="bash")
    if watch:
        st.fragment(_wait_for_search, run_every=WAIT_SECONDS)(storage)


def _wait_for_search(storage: str) -> None:
    """Reload the whole page once the storage holds a study (a search has started)."""
    try:
        started = bool(loaders.list_studies(storage))
    except (StorageError, StorageUnavailable):
        return
    if started:
        st.rerun(scope="app")


def _summary_row(summary: data.StudySummary, records: list[TrialRecord]) -> None:
    cols = st.columns(5)
    states = summary.states
    cols[0].metric(
        "Trials",
        summary.n_trials,
        help=", ".join(f"{charts.state_name(s)} {n}" for s, n in states.items()),
    )
    cols[1].metric("Pruned / failed", f"{states.get('PRUNED', 0)} / {states.get('FAIL', 0)}")
    cols[2].metric("On the Pareto front", summary.n_front)
    cols[3].metric(
        "Hypervolume",
        f"{summary.hypervolume:.3f}",
        help=f"dominated volume, normalised to [0, 1], {md(summary.hypervolume_over)}",
    )
    if summary.best is not None:
        cols[4].metric(
            "Best accuracy",
            f"{summary.best.val_acc:.2%}",
            help=f"{md(summary.best.label())}: {md(data.design(summary.best))}",
        )
    refs = {r.reference: r for r in records if r.is_reference and r.complete}
    if refs:
        st.caption(
            "References: "
            + " · ".join(
                f"**{md(name)}** {r.val_acc if r.val_acc is not None else float('nan'):.2%} at {r.params or 0:,} params"
                for name, r in sorted(refs.items())
            )
        )


def _open_trial(number: int) -> None:
    st.session_state["detail_trial"] = number
    st.session_state["view"] = "Trial details"


def _open_selected(chart: str) -> None:
    """Open the trial whose point is selected in chart `chart` (its number in customdata[0])."""
    points = (st.session_state.get(chart) or {}).get("selection", {}).get("points", [])
    if points and points[0].get("customdata"):
        _open_trial(int(points[0]["customdata"][0]))


def _on_chart_select() -> None:
    _open_selected("pareto")


def _on_verified_select() -> None:
    _open_selected("verified")


def _pareto_tab(
    records: list[TrialRecord],
    config,
    verification: verdicts.VerificationInfo | None,
    budget: str | None,
) -> None:
    c1, c2, c3 = st.columns([3, 1, 2])
    x = c1.radio("x-axis", data.X_AXES, format_func=X_LABELS.get, horizontal=True, key="x_axis")
    log_x = c2.toggle("log scale", key="log_x")
    y = "val_acc"
    if data.has_reeval(records):
        y = c3.radio(
            "accuracy",
            tuple(data.Y_AXES),
            horizontal=True,
            key="y_axis",
            format_func={"val_acc": "search", "reeval": "re-evaluated"}.get,
        )
    title = (
        verdicts.front_label(verification, budget, top=verification is not None)
        if y == "val_acc"
        else "front on re-evaluated test accuracy (mean over seeds)"
    )
    info = data.pareto_info(records, x=x, y=y, log_x=log_x, config=config, title=title)
    if summary_limits := data.limits_text(config):
        st.caption(
            f"Limits of this study: {md(summary_limits)}; designs over them are not on the front."
        )
    st.plotly_chart(
        charts.pareto_figure(info),
        key="pareto",
        on_select=_on_chart_select,
        selection_mode="points",
        config={"displaylogo": False},
    )
    missing = ", ".join(f"{n} {charts.state_name(s)}" for s, n in info.not_drawn.items())
    st.caption(
        "Click a point to open its details."
        + (f" Not drawn (no {X_LABELS[x]} or accuracy yet): {missing}." if missing else "")
    )
    if info.front:
        st.markdown("**Designs on the front**")
        status = verdicts.trial_statuses(verification)
        front = pd.DataFrame(
            [(p.label, p.y, p.x, status.get(p.number), p.design) for p in info.front],
            columns=["trial", "accuracy", X_LABELS[x], "verification", "design"],
        )
        st.dataframe(
            verdicts.style_verdicts(front, ["verification"]),
            hide_index=True,
            column_order=[c for c in front.columns if c != "verification" or status],
            column_config={"accuracy": st.column_config.NumberColumn(format="percent")},
        )


def _verified_tab(
    info: verdicts.VerificationInfo | None, problem: str | None, budget: str | None
) -> None:
    """The search's claims against v1/v2, retrained beside their references."""
    if info is None:
        st.warning(f"This study's verification cannot be shown: {md(problem)}.", icon="⚠️")
        return
    refs = md("/".join(info.references) or "v1/v2")
    if not info.claims:
        st.info(
            f"No design on the search front scored above {refs} with no more parameters: the "
            "search makes no claim to verify."
            if info.references
            else "The study has no complete v1 or v2 trial: the search makes no claim to verify.",
            icon="ℹ️",
        )
        return
    n = len(info.claims)
    at = md(budget or "the search budget")
    if info.budget is None:
        why = (
            "The verification's share of the time ran out before its first run"
            if info.attempted
            else "No verification runs in this study yet"
        )
        st.info(
            f"{why}: its {n} claim(s) against {refs} are single runs at "
            f"{at}. This command resumes the study without new designs and races each claim "
            f"against its reference at {VERIFY_FACTOR}x that budget, {info.first} to {info.cap} "
            "paired seeds a claim (--timeout: enough for every run, estimated from the search's "
            "trial times; a rerun continues the race):",
            icon="ℹ️",
        )
        st.code(info.command, language="bash")
        _claims_table(info)
        return
    st.markdown(
        f"**{info.held} of {n} claim{'s' if n != 1 else ''} held** when retrained at "
        f"{md(info.budget)}: each front "
        f"design that scored above {refs} at {at} with no more parameters, raced against that "
        f"reference over {info.first} to {info.cap} paired seeds."
    )
    if info.open:
        st.warning(
            f"The verification stopped before deciding {info.open} of {n} claim(s) (its time "
            "ran out): they are listed as undecided, not as results. This command continues the "
            "race, adding seeds only where undecided:",
            icon="⏳",
        )
        st.code(info.command, language="bash")
    left, right = st.columns(2)
    left.plotly_chart(
        charts.verified_figure(info),
        key="verified",
        on_select=_on_verified_select,
        selection_mode="points",
        config={"displaylogo": False},
    )
    right.plotly_chart(charts.claims_figure(info), key="claims", config={"displaylogo": False})
    missing = [r for r in info.references if r not in {p.label for p in info.retrained}]
    st.caption(
        "Click a point to open its details."
        + (f" Not retrained (no claim against it): {md(', '.join(missing))}." if missing else "")
    )
    _claims_table(info)
    _rule(
        "Each claim is judged on the seeds both designs ran at the verification budget, never "
        "on the search's own run; the race judges its claims together at each look."
    )


def _claims_table(info: verdicts.VerificationInfo) -> None:
    st.dataframe(
        verdicts.style_verdicts(verdicts.claims_frame(info.claims), ["status", "verdict"]),
        hide_index=True,
        key="claims_table",
        column_config={
            "difference": st.column_config.NumberColumn(format="%+.4f"),
            "design acc": st.column_config.NumberColumn(format="%.4f"),
            "reference acc": st.column_config.NumberColumn(format="%.4f"),
        },
    )


def _rule(how: str = "") -> None:
    """The one rule by which the page states a difference, where it shows verdicts."""
    st.caption(f"{how} The rule: {RULE}. Colours: {verdicts.VERDICT_LEGEND}.".strip())


def _progress_tab(storage: str, study_name: str, loaded: loaders.LoadedStudy, config) -> None:
    info = loaders.progress(storage, study_name, loaded.fingerprint, loaded.records, config)
    if loaded.by_rung:
        st.markdown("**Designs per rung**")
        st.dataframe(
            data.rung_counts_frame(loaded.by_rung, config),
            hide_index=True,
            key="rung_counts",
        )
    left, right = st.columns(2)
    left.plotly_chart(charts.hypervolume_figure(info), key="hypervolume")
    right.plotly_chart(charts.accuracy_figure(info), key="accuracy")
    importance = loaders.importances(storage, study_name, loaded.fingerprint, loaded.study)
    if importance.message:
        st.info(md(importance.message), icon="ℹ️")
    else:
        st.plotly_chart(charts.importance_figure(importance), key="importance")
    st.subheader("Zero-cost proxies")
    st.caption(
        "Scores of each design at initialisation, from one batch, before training; how well "
        "they rank the trained designs, next to the parameter count alone."
    )
    proxies = data.proxy_info(loaded.records)
    if proxies.message:
        st.info(proxies.message, icon="ℹ️")
    else:
        left, right = st.columns(2)
        left.plotly_chart(charts.proxy_correlation_figure(proxies), key="proxy_corr")
        chosen = right.selectbox("proxy", list(proxies.points), key="proxy")
        right.plotly_chart(charts.proxy_scatter_figure(proxies, chosen), key="proxy_scatter")


def _trials_tab(
    records: list[TrialRecord],
    study_name: str,
    config=None,
    verification: verdicts.VerificationInfo | None = None,
) -> None:
    frame = data.trials_frame(records, config, verdicts.trial_statuses(verification))
    c1, c2 = st.columns(2)
    present = list(dict.fromkeys(frame["state"]))
    states = c1.multiselect(
        "State", present, default=present, key="filter_states", format_func=charts.state_name
    )
    kinds = c2.multiselect(
        "Kind", ["search", "reference"], default=["search", "reference"], key="filter_kinds"
    )
    shown = data.filter_trials(frame, states, kinds).reset_index(drop=True)

    def open_row() -> None:
        rows = st.session_state["trials_table"]["selection"]["rows"]
        if rows:
            _open_trial(int(shown.loc[rows[0], "trial"]))

    st.dataframe(
        verdicts.style_verdicts(shown, ["verification"]),
        hide_index=True,
        key="trials_table",
        on_select=open_row,
        selection_mode="single-row",
        column_order=[
            c
            for c in shown.columns
            if c not in ("test_acc", "test_acc_std", "verification") or shown[c].notna().any()
        ],
        column_config={
            "design": st.column_config.TextColumn(width="large"),
            "val_acc": st.column_config.NumberColumn("val acc", format="percent"),
            "test_acc": st.column_config.NumberColumn("test acc", format="percent"),
            "params": st.column_config.NumberColumn(format="localized"),
            "flops": st.column_config.NumberColumn(format="compact"),
        },
    )
    st.caption(f"{len(shown)} of {len(frame)} trials · select a row to open its details")
    st.download_button(
        "Download CSV",
        shown.to_csv(index=False),
        f"{guard.filename(study_name)}_trials.csv",
        mime="text/csv",
        key="download_csv",
        on_click="ignore",
    )


def _trial_picker(records: list[TrialRecord], label: str, key: str, default: int) -> TrialRecord:
    by_number = {r.number: r for r in records}
    if st.session_state.get(key) not in by_number:
        st.session_state[key] = default
    number = st.selectbox(
        label,
        list(by_number),
        key=key,
        format_func=lambda n: (
            f"{by_number[n].label()} · {by_number[n].state.lower()} · {data.design(by_number[n])}"
        ),
    )
    return by_number[number]


def _details_tab(
    storage: str,
    study_name: str,
    loaded: loaders.LoadedStudy,
    best: TrialRecord | None,
    verification: verdicts.VerificationInfo | None = None,
) -> None:
    records = loaded.records
    record = _trial_picker(records, "Trial", "detail_trial", (best or records[-1]).number)
    note = data.trial_note(record)
    if note:
        st.warning(f"{md(record.label())}: {md(note)}", icon="⚠️")
    left, right = st.columns([3, 2])
    with left:
        if record.block is not None:
            stages = details.stage_diagrams(record)
            picked = 0
            if len(stages) > 1:
                picked = st.radio(
                    "stage",
                    range(len(stages)),
                    format_func=lambda i: f"stage {i + 1}",
                    horizontal=True,
                    key="detail_stage",
                )
            st.plotly_chart(
                charts.block_figure(stages[picked]),
                key="block",
                config={"displayModeBar": False},
            )
            whose = "each stage's own design's" if record.network.per_stage else "the design's"
            st.caption(
                f"Channel counts as trained: {whose} widths times the network's width in "
                "stage 1, doubled in each later stage."
            )
            st.code(details.design_lines(record), language=None)
        curves = details.curves_frame(record)
        if len(curves):
            st.plotly_chart(charts.curves_figure(curves), key="curves")
        else:
            st.caption("No learning curves stored for this trial.")
    with right:
        if verification is not None:
            _verification_of(verification, record)
        st.dataframe(details.trial_metrics(record), hide_index=True, key="metrics")
        if record.block is not None and loaded.problem:
            st.caption("No code download: the exporter needs the study's settings.")
        elif record.block is not None:
            command = data.export_command(storage, study_name, record.number)
            source, why = loaders.export_code(
                storage, study_name, record.number, command, loaded.study
            )
            if source is not None:
                st.download_button(
                    "Download PyTorch code",
                    source,
                    data.export_filename(record.number),
                    mime="text/x-python",
                    key="download_code",
                    on_click="ignore",
                    type="primary",
                )
                st.caption(f"the same file as {code(command)}")
            else:
                st.caption(md(why))
        if loaded.by_rung:
            rung = next((k for k, s in loaded.rung_studies.items() if s is loaded.study), None)
            path = data.design_path_frame(loaded.by_rung, rung, record.number)
            if len(path):
                st.markdown("**Across rungs**")
                st.dataframe(
                    path,
                    hide_index=True,
                    key="rung_path",
                    column_config={
                        "val_acc": st.column_config.NumberColumn("val acc", format="percent")
                    },
                )
        if record.network is not None:
            with st.expander("Stored design (NetworkConfig)"):
                st.json(record.network.to_dict())


def _verification_of(info: verdicts.VerificationInfo, record: TrialRecord) -> None:
    """Where the claims of a front design (or those against a reference) stand."""
    claims = info.claims_of(record.number)
    retrained = verdicts.retrained_text(info, record.number)
    if not claims and retrained is None:
        return
    st.markdown("**Verification**")
    if retrained is not None:
        st.caption(md(retrained))
    if claims:
        st.dataframe(
            verdicts.style_verdicts(
                verdicts.design_frame(info, record.number), ["status", "verdict"]
            ),
            hide_index=True,
            key="verification",
        )


def _compare_tab(
    records: list[TrialRecord],
    best: TrialRecord | None,
    verification: verdicts.VerificationInfo | None = None,
) -> None:
    refs = [r for r in records if r.is_reference]
    c1, c2 = st.columns(2)
    with c1:
        a = _trial_picker(
            records, "Design A", "compare_a", (refs[0] if refs else records[0]).number
        )
    with c2:
        b = _trial_picker(records, "Design B", "compare_b", (best or records[-1]).number)
    frame = details.compare_frame(a, b)
    st.dataframe(
        frame.style.apply(
            lambda row: ["background-color: #fff3cd" if row["differs"] else ""] * len(row), axis=1
        ),
        hide_index=True,
        key="compare_table",
    )
    pairs = verdicts.paired_verdicts(a, b, verification)
    if pairs:
        st.markdown("**Paired verdict** (B minus A, test accuracy, seed by seed)")
        st.dataframe(
            verdicts.style_verdicts(
                verdicts.paired_frame(pairs, a.label(), b.label()), ["verdict"]
            ),
            hide_index=True,
            key="compare_verdicts",
        )
        _rule(
            "A claimant against its reference is the verification race's verdict; any other "
            "pair is judged alone, with no correction for the other pairs one may look at."
        )
    for i, (col, record) in enumerate(zip(st.columns(2), (a, b), strict=True)):
        with col:
            if record.block is not None:
                # a per-stage design drawn stage by stage; a shared block once
                diagrams = details.stage_diagrams(record)
                for s, diagram in enumerate(diagrams if record.network.per_stage else diagrams[:1]):
                    st.plotly_chart(
                        charts.block_figure(diagram),
                        key=f"compare_block_{i}" + (f"_{s}" if s else ""),
                        config={"displayModeBar": False},
                    )
            else:
                st.caption(md(data.design(record)))


METRIC_NAMES = {"val": "validation", "test": "test"}


def _on_waterfall_select() -> None:
    points = (st.session_state.get("waterfall") or {}).get("selection", {}).get("points", [])
    # the column's bar carries its step; the parameters' point beside it carries nothing
    bar = next((p for p in points if p.get("customdata")), None)
    if bar is not None and bar["customdata"][0] >= 0:
        st.session_state["ablation_step"] = int(bar["customdata"][0])


def _ablation_tab(storage: str, loaded: loaders.LoadedStudy) -> None:
    study_name = loaded.study.study_name
    ladders = loaders.ablations(
        storage, study_name, ablation.fingerprint(loaded.study), loaded.study
    )
    command = ablation.ablate_command(storage, study_name)
    if not ladders:
        st.info(
            "No ablation of this study yet. Measure why v2 beats v1 (and what each part of "
            f"the best design is worth), one change at a time with paired seeds: {code(command)}",
            icon="ℹ️",
        )
        return
    c1, c2 = st.columns([3, 2])
    pick = c1.selectbox(
        "Ladder",
        range(len(ladders)),
        format_func=lambda i: (
            f"{ladders[i].stored.ladder.title} "
            f"(budget {ladders[i].stored.budget}, {ladders[i].seeds} seeds)"
        ),
        key="ablation_ladder",
    )
    metric = c2.radio(
        "accuracy", tuple(METRIC_NAMES), format_func=METRIC_NAMES.get, horizontal=True,
        key="ablation_metric",
    )  # fmt: skip
    measured = ladders[pick]
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(
            charts.waterfall_figure(
                ablation.bars(measured, metric), measured.stored.ladder.title, metric
            ),
            key="waterfall",
            on_select=_on_waterfall_select,
            selection_mode="points",
            config={"displaylogo": False},
        )
        st.caption(
            "Each bar: a step's paired mean difference over the same seeds, with its interval "
            "(the ladder's steps judged together), in its verdict's colour. Click a bar to draw "
            "its two designs below."
        )
    with right:
        importance = loaders.importances(storage, study_name, loaded.fingerprint, loaded.study)
        if importance.message:
            st.info(md(importance.message), icon="ℹ️")
        else:
            grouped = ablation.group_importances(importance.importances)
            st.plotly_chart(
                charts.importance_figure(data.ImportanceInfo(
                    dict(sorted(grouped.items(), key=lambda kv: -kv[1])), None)),
                key="ablation_importance",
            )  # fmt: skip
            line = ablation.disagreement(measured, importance.importances)
            if line:
                st.markdown(line)
            st.caption(
                "Importances (fANOVA over the search's samples, summed per field group) are "
                "correlations over a biased sample; the ladder's steps are interventions."
            )
    if measured.missing:
        st.warning(
            f"{measured.missing} runs of this ladder are not stored yet; {code(command)} trains "
            "them.",
            icon="⏳",
        )
    st.dataframe(
        verdicts.style_verdicts(ablation.steps_frame(measured), ["Δ val acc", "Δ test acc"]),
        hide_index=True,
        key="ablation_steps",
    )
    if measured.interaction_val is not None:
        st.caption(
            "Interaction of batch norm and the factorized wide path (what one adds with the "
            f"other minus what it adds alone): val {measured.interaction_val.text()}; "
            f"test {measured.interaction_test.text()}"
        )
    _rule()
    steps = measured.steps
    if st.session_state.get("ablation_step", 0) >= len(steps):
        st.session_state["ablation_step"] = 0
    chosen = st.selectbox(
        "Step", range(len(steps)), format_func=lambda i: ablation.step_name(steps[i], i),
        key="ablation_step",
    )  # fmt: skip
    step = steps[chosen]
    for i, (col, design) in enumerate(zip(st.columns(2), (step.before, step.after), strict=True)):
        with col:
            stage = step.step.stage  # a per-stage step: the stage it changes
            title = design.name if stage is None else f"{design.name}, stage {stage + 1}"
            diagram = details.block_diagram(design.network.stage_block(stage or 0), title)
            st.plotly_chart(
                charts.block_figure(diagram),
                key=f"ablation_block_{i}",
                config={"displayModeBar": False},
            )
            st.caption(md(design.network.short()))


if __name__ == "__main__":
    main()
