"""bench/ is one tool: ``python -m bench NAME`` runs each bench of its table and every one answers
``--help``; the benches share one module of helpers (bench/_common.py: machine facts, timing,
BENCHMARKS.md sections, resumable state), edit no ``sys.path``, import from explorer only what a
package exports, and keep their functions short enough to read; every section a bench writes names
the command that rewrites it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import math
import multiprocessing
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bench import _common
from bench.__main__ import BENCHES, QUICK
from bench.__main__ import main as bench_main

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = sorted(BENCH.glob("*.py"))
SHARED = {"__init__.py", "__main__.py", "_common.py"}  # the tool itself, not benches
SURFACES = {f"explorer.{name}" for name in ("store", "training", "analysis", "search", "evaluate",
                                            "export", "ablate", "usage", "cli")}  # fmt: skip
MAX_FUNCTION_LINES = 120


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _name(path: Path) -> str:
    return path.name


def test_the_table_holds_every_bench_and_each_has_a_main():
    modules = sorted(p.stem for p in SCRIPTS if p.name not in SHARED)
    assert sorted(BENCHES) == modules
    for name in BENCHES:
        tree = _tree(BENCH / f"{name}.py")
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), name


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_the_tool_lists_every_bench_with_one_line():
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    listed = re.findall(r"^  (\w+) +\S.*$", proc.stdout, re.M)
    assert listed == list(BENCHES)


@pytest.mark.parametrize("argv, message", [([], "usage: python -m bench NAME"),
                                           (["benchmark"], "no bench 'benchmark'")])  # fmt: skip
def test_a_missing_or_unknown_bench_is_a_usage_error(argv, message, capsys):
    assert bench_main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err
    if argv:
        assert err.count("\n") == 1


@pytest.mark.parametrize("name", list(BENCHES))
def test_each_bench_answers_help(name):
    proc = _run(name, "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"usage: python -m bench {name}"), proc.stdout[:500]


def test_make_bench_runs_the_quick_benches():
    """`make bench` runs exactly the benches the table marks quick, through the one entry."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    run = [shlex.split(line)[2:4] for line in recipe.strip().splitlines()]
    assert all(r[0] == "bench" for r in run) and [r[1] for r in run] == list(QUICK)
    assert len(QUICK) >= 3


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_no_bench_edits_sys_path(script):
    """A bench imports its helpers as a package module (``from ._common import ...``)."""
    for node in ast.walk(_tree(script)):
        assert not (isinstance(node, ast.Attribute) and node.attr == "path"
                    and isinstance(node.value, ast.Name) and node.value.id == "sys"), (
            f"{script.name}:{node.lineno} uses sys.path")  # fmt: skip


def _section_titles(path: Path) -> set[str]:
    """The literal titles a bench hands `write_section` or `publish` (directly or through a module
    constant)."""
    tree = _tree(path)
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}  # fmt: skip
    titles = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("write_section", "publish")
                and node.args):  # fmt: skip
            first = node.args[0]
            if isinstance(first, ast.Constant):
                titles.add(first.value)
            elif isinstance(first, ast.Name) and first.id in constants:
                titles.add(constants[first.id])
    return titles


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_each_section_a_bench_writes_names_the_command_that_rewrites_it():
    sections = _sections((ROOT / "BENCHMARKS.md").read_text())
    found = 0
    for name in BENCHES:
        for title in _section_titles(BENCH / f"{name}.py"):
            if title in sections:  # a bench not yet run has no section
                found += 1
                assert f"python -m bench {name}" in sections[title], title
    assert found >= 12


def test_nothing_names_the_old_script_form():
    pages = [ROOT / "BENCHMARKS.md", ROOT / "README.md", ROOT / "Makefile",
             *(ROOT / "docs").glob("*.md"), *SCRIPTS, BENCH / "gpu.sh"]  # fmt: skip
    old = [
        f"{p.name}: {m}"
        for p in pages
        for m in re.findall(r"python3? bench/\w+\.py", p.read_text())
    ]
    assert not old


def test_write_section_replaces_one_section_and_wants_its_command(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n## A\n\nold a\n\n## B\n\nold b\n")
    _common.write_section("A", "Command: `python -m bench x`.\nnew a", path)
    _common.write_section("C", "Command: `python -m bench y`.", path)
    assert path.read_text() == (
        "# Benchmarks\n\n## A\n\nCommand: `python -m bench x`.\nnew a\n\n## B\n\nold b\n\n"
        "## C\n\nCommand: `python -m bench y`.\n"
    )
    with pytest.raises(ValueError, match="does not name"):
        _common.write_section("B", "figures with no command", path)
    assert "old b" in path.read_text()


def test_the_command_line_is_the_one_entry():
    assert _common.command("trainer", []) == "python -m bench trainer"
    assert _common.command("rungs", ["hold", "--storage", "a b.journal"]) == (
        "python -m bench rungs hold --storage 'a b.journal'"
    )
    assert _common.machine().count(", ") >= 4 and "CPU cores" in _common.machine()


def _put_many(path: str, prefix: str, count: int) -> None:
    state = _common.JsonState(path)
    for i in range(count):
        state.put(f"{prefix}{i}", {"i": i})


def test_resumable_state_keeps_every_process_s_entries(tmp_path):
    """Two processes writing one state file at once lose none of each other's entries, and a
    reader sees what a writer added after the reader's first look."""
    path = tmp_path / "results" / "state.json"
    reader = _common.JsonState(path)
    assert reader.get("a0") is None
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_put_many, args=(str(path), p, 25)) for p in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    assert sorted(data) == sorted(f"{p}{i}" for p in "ab" for i in range(25))
    assert reader.get("b24") == {"i": 24}
    assert _common.results_dir("strategies") == BENCH / "results" / "strategies"


def _explorer_imports(tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of explorer, at any depth; code held in a string to
    run in a child process (bench/chaos.py's worker) counts too."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "explorer":
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names if a.name.startswith("explorer")]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "import" in node.value and "explorer" in node.value:
                try:
                    inner = ast.parse(node.value)
                except SyntaxError:
                    continue
                out += [(node.lineno, m, n) for _, m, n in _explorer_imports(inner)]
    return out


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_bench_imports_only_what_packages_export(script):
    wrong = []
    for line, module, names in _explorer_imports(_tree(script)):
        where = f"{script.name}:{line}"
        if module not in SURFACES:
            wrong.append(f"{where}: {module} is not a package (one of {sorted(SURFACES)})")
            continue
        public = getattr(importlib.import_module(module), "__all__", None)
        for name in names:
            if name.startswith("_") or (public is not None and name not in public):
                wrong.append(f"{where}: {module}.{name} is not in its __all__")
    assert not wrong


def test_the_import_check_catches_a_submodule_and_a_private_name():
    tree = ast.parse(
        "from explorer.training.trainer import _setup\n"
        "def f():\n"
        "    from explorer.search import run_worker, _claim\n"
        "WORKER = '''\nfrom explorer.search.workers import run_worker\n'''\n"
    )
    found = {module: names for _, module, names in _explorer_imports(tree)}
    assert found == {
        "explorer.training.trainer": ["_setup"],
        "explorer.search": ["run_worker", "_claim"],
        "explorer.search.workers": ["run_worker"],
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_no_bench_function_is_too_long_to_read(script):
    long = [
        f"{script.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(_tree(script))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long


def _strategies(monkeypatch):
    return importlib.import_module("bench.strategies")


def test_strategies_packs_a_finished_cell_and_reads_each_design_once(tmp_path, monkeypatch):
    """A finished cell's journal is gzipped and read back with the same fronts; a design the
    sampler proposed again is one entry of its front; a time point before any trial ended has
    an empty front."""
    import json
    from datetime import datetime, timedelta

    import optuna

    from tests.helpers import make_study

    S = _strategies(monkeypatch)
    start = datetime.now() - timedelta(seconds=5)
    study = make_study(str(S.journal(tmp_path, "quick-tpe", 0)), name=S.STUDY, n_search=6,
                       weights=False)  # fmt: skip
    first = max((t for t in study.trials if t.values), key=lambda t: t.values[0])
    copy = optuna.trial.create_trial(params=first.params, distributions=first.distributions,
                                     values=first.values,
                                     user_attrs={**first.user_attrs, "duplicate_of": first.number})  # fmt: skip
    study.add_trial(copy)
    S.pack(tmp_path, "quick-tpe", 0)  # not finished: left as it is
    assert S.journal(tmp_path, "quick-tpe", 0).exists()
    S.done_file(tmp_path, "quick-tpe", 0).write_text(json.dumps({"start": start.isoformat()}))
    before = S.fronts_at(tmp_path, "quick-tpe", 0, [0.0, 10.0])
    S.pack(tmp_path, "quick-tpe", 0)
    assert not S.journal(tmp_path, "quick-tpe", 0).exists()
    assert S.packed(tmp_path, "quick-tpe", 0).stat().st_size > 0
    after = S.fronts_at(tmp_path, "quick-tpe", 0, [0.0, 10.0])
    numbers = [r.number for r in after[10.0][0]]
    assert numbers == [r.number for r in before[10.0][0]] and first.number in numbers
    designs = [r.network.to_json() for r in after[10.0][0]]
    assert len(designs) == len(set(designs))  # the copy is not a second entry
    assert set(after[10.0][1]) == {"v1", "v2"}
    refs = after[10.0][1]
    assert after[10.0][2] == [(r, ref) for ref in refs.values() for r in after[10.0][0]
                              if r.params <= ref.params and r.val_acc > ref.val_acc]  # fmt: skip
    assert after[0.0] == ([], {}, [])


def test_strategies_judges_claims_and_pairs_seeds(tmp_path, monkeypatch):
    """A claim (a front design no larger than a reference, more accurate in the search) counts
    as reversed when the retrained accuracies say otherwise, and as unjudged while either is
    missing; pairs of strategies are differenced seed by seed."""
    from explorer.store import TrialRecord
    from search_space import REFERENCES, NetworkConfig, network_params

    S = _strategies(monkeypatch)
    judged = S.Judged(tmp_path / "judged.json")

    def record(number, block, acc, params, reference=None):
        return TrialRecord(number=number, state="COMPLETE", val_acc=acc, params=params,
                           network=NetworkConfig(block=block), reference=reference)  # fmt: skip

    v1 = record(0, REFERENCES["v1"], 0.80, 1000, "v1")
    small = record(5, dataclasses.replace(REFERENCES["v1"], ch1x1=16), 0.82, 900)
    big = record(6, dataclasses.replace(REFERENCES["v1"], ch1x1=96), 0.90, 5000)
    claims = [(small, v1)]  # big has more parameters than v1: no claim
    assert S.reversed_claims(claims, judged, "quickx10") == (0, 1, 1)
    judged.put(v1.network, "quickx10", 0, 0.85, 0.86)
    judged.put(small.network, "quickx10", 0, 0.84, 0.85, seconds=3.0)
    assert S.reversed_claims(claims, judged, "quickx10") == (1, 1, 0)
    assert S.Judged(tmp_path / "judged.json").get(small.network, "quickx10")["seconds"] == 3.0
    # A per-stage study stores its references stage by stage: judged as the same network with
    # one shared block, the run the judge trains once for every strategy.
    from search_space import reference_network

    net3 = NetworkConfig(block=REFERENCES["v1"], stages=(1, 1, 1))
    ps_v1 = dataclasses.replace(v1, network=reference_network("v1", net3, per_stage=True))
    ps_small = dataclasses.replace(small, network=dataclasses.replace(ps_v1.network, width=0.125))
    assert ps_v1.network.to_json() != reference_network("v1", net3, per_stage=False).to_json()
    judged.put(reference_network("v1", ps_small.network, per_stage=False), "quickx10", 0, 0.8, 0.8)
    judged.put(ps_small.network, "quickx10", 0, 0.81, 0.82)
    assert S.reversed_claims([(ps_small, ps_v1)], judged, "quickx10") == (0, 1, 0)
    hv, missing = S.judged_front([small, big], judged, "quickx10")
    assert missing and hv != hv  # nan until every front design is retrained
    judged.put(big.network, "quickx10", 0, 0.90, 0.91)
    hv, missing = S.judged_front([small, big], judged, "quickx10")
    assert not missing and 0.0 < hv < 0.91
    # in v2's box a design larger than v2 needs no retraining: it cannot add to the volume
    huge = record(7, dataclasses.replace(REFERENCES["v1"], ch1x1=192), 0.95, 400_000)
    assert S.inside([small, big, huge], "v2") == [small, big]
    in_box, missing = S.judged_front([small, big, huge], judged, "quickx10", "v2")
    limit = S.box("v2").reference["params"]  # v2's parameters + 1, recomputed from the block
    assert limit == 1 + network_params(NetworkConfig(block=REFERENCES["v2"]))
    # the area each point dominates up to the next larger one, over the box's area
    expected = 0.85 * (5000 - 900) / limit + 0.91 * (limit - 5000) / limit
    assert not missing and math.isclose(in_box, expected, rel_tol=1e-9)
    table = {("a", 0, 10.0): 0.5, ("a", 1, 10.0): 0.7, ("quick-random", 0, 10.0): 0.4,
             ("quick-random", 1, 10.0): 0.5}  # fmt: skip
    head, line = S.paired_lines(table, ["quick-random", "a"], [0, 1], [10.0])
    assert head.startswith("Differences of retrained hypervolume, paired by seed; a difference")
    # judged by the tool's one rule: +0.15 over 2 seeds (0.1 and 0.2) is not distinguishable
    assert line.startswith("- a - quick-random at 10 min: +0.1500 [")
    assert line.endswith("at 2 seeds: not distinguishable at 2 seeds")


def test_strategies_take_a_verifying_strategy_s_claims_from_its_verification(tmp_path, monkeypatch):
    """A TIMED strategy has a cell per time point, its front is its whole run's, and its claims
    are the ones its verification upheld, not every claim of the search's scores."""
    import json
    from datetime import datetime, timedelta

    from explorer.analysis import Reeval, study_records
    from explorer.search.verification import VERIFY_PREFIX, search_claims
    from tests.helpers import make_study

    S = _strategies(monkeypatch)
    name = "quick-tpe-verify"
    assert name in S.TIMED and S.cell_id(name, 10.0) == "quick-tpe-verify-10min"
    ns = S.parse_args(["run", "--strategies", f"quick-tpe,{name}", "--seeds", "0",
                       "--points", "10,30"])  # fmt: skip
    assert [(c, m) for c, _, _, m in S.runs(ns)] == [
        ("quick-tpe", 30.0), ("quick-tpe-verify-10min", 10.0), ("quick-tpe-verify-30min", 30.0)
    ]  # fmt: skip
    cell = S.cell_id(name, 10.0)
    study = make_study(str(S.journal(tmp_path, cell, 0)), name=S.STUDY, n_search=10, seed=4,
                       weights=False)  # fmt: skip
    claims = search_claims(study_records(study))
    assert len(claims) == 4
    keep = claims[0]
    for c in claims:  # the first claim holds over 3 paired seeds, the others reverse
        accs = (0.9, 0.91, 0.905) if c is keep else (0.5, 0.52, 0.49)
        study.set_user_attr(f"{VERIFY_PREFIX}{c.design.number}",
                            Reeval(accs, accs, "quickx3").to_dict())  # fmt: skip
        study.set_user_attr(f"{VERIFY_PREFIX}{c.reference.number}",
                            Reeval((0.7, 0.71, 0.69), (0.7, 0.71, 0.69), "quickx3").to_dict())  # fmt: skip
    start = datetime.now() - timedelta(hours=1)  # the whole run counts, however long it took
    S.done_file(tmp_path, cell, 0).write_text(json.dumps({"start": start.isoformat()}))
    assert not S.finished(tmp_path, name, 0, [10.0, 30.0])  # the 30-minute cell is missing
    assert S.finished(tmp_path, name, 0, [10.0])
    front, refs, stated = S.fronts_at(tmp_path, name, 0, [10.0])[10.0]
    assert [(d.number, r.reference) for d, r in stated] == [
        (keep.design.number, keep.reference.reference)
    ]
    assert set(refs) == {"v1", "v2"} and keep.design.number in [r.number for r in front]


def test_strategies_report_says_on_which_cpu_each_seed_ran(tmp_path, monkeypatch):
    """A seed's cells pair only on one CPU: the report names it, or says they do not pair."""
    import json

    S = _strategies(monkeypatch)
    for name, seed, cpu in (("quick-tpe", 0, "AMD EPYC"), ("quick-random", 0, "AMD EPYC"),
                            ("quick-tpe", 1, "AMD EPYC"), ("quick-random", 1, "Intel Xeon")):  # fmt: skip
        machine = f"{cpu}, 2 CPU cores, Python 3.11.7"
        S.done_file(tmp_path, name, seed).write_text(json.dumps({"machine": machine}))
    lines = S.cpu_lines(tmp_path, ["quick-tpe", "quick-random"], [0, 1, 2], [10.0, 30.0])
    assert lines == ["- seed 0: every cell on the AMD EPYC",
                     "- seed 1: cells on AMD EPYC and Intel Xeon: NOT paired on one CPU"]  # fmt: skip


def test_the_verdict_bench_reads_the_recorded_per_seed_tables(monkeypatch):
    """`python -m bench verdicts` takes its seed noise from the 3-seed tables BENCHMARKS.md records: two
    studies (12 and 6 designs), every pair of designs of a study paired seed by seed."""
    from bench import verdicts

    tables = verdicts.studies((ROOT / "BENCHMARKS.md").read_text())
    assert sorted(len(t) for t in tables) == [6, 12]
    assert all(len(v) == 3 for t in tables for v in t.values())
    pool = verdicts.noise_pool(tables)
    assert len(pool) == 3 * sum(len(t) * (len(t) - 1) // 2 for t in tables)
    assert abs(pool.mean()) < 1e-9  # residuals: centred per design


def test_a_gpu_step_runs_in_its_own_process_through_the_tool():
    """`python -m bench gpu` runs each step in a fresh `python -m bench gpu --step NAME` process;
    the child reaches the step itself: without CUDA, the step's own CUDA error comes back."""
    import torch

    from bench import gpu

    row = gpu.run_in_child("env", gpu.Context("cpu", None, True), cap_s=90)
    if torch.cuda.is_available():
        assert row["device"]["type"] == "cuda", row
    else:
        # exit 1 from the step's CUDA call, not 2 (the child's flags) nor a missing module
        assert row["error"].startswith("exit 1: ") and "No module named" not in row["error"], row
