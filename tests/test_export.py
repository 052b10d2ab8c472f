"""Tests of `explorer.export`: the generated module reproduces `build_network` without the project.

The standalone building blocks are held against `build_network` directly, and the exported files
(which are those blocks' text plus the designs as data) in a Python that cannot import the
project; trained exports take images in [0, 1] and reach the accuracy the project measures;
ONNX, `torch.export` and TorchScript compute what the PyTorch classes compute.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import importlib.util
import inspect
import json
import py_compile
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import types
import warnings
from pathlib import Path

import optuna
import pytest
import torch

from explorer.analysis import pareto_front, study_records
from explorer.export import (
    ExportError,
    export_design,
    export_source,
    export_to_file,
    main,
    standalone,
)
from explorer.export import files as export_files
from explorer.export.files import trained_model, weights_path
from explorer.export.render import blocks_source, render_source
from explorer.export.selection import ExportDesign, network_kwargs, select_trials, trial_weights
from explorer.store import artifact_dir, open_storage
from search_space import (
    REFERENCES,
    BlockConfig,
    NetworkConfig,
    build_network,
    network_params,
    reference_network,
)
from tests.helpers import make_study

REPO = Path(__file__).parents[1]
PROG_ERROR = "python -m explorer.export: error: "
NASTY = 'x\'"""\nimport os; os.system("echo pwned")  # \\ \x00 é """'


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[str, optuna.Study]:
    """A seeded study with real designs and weights, plus an empty study in the same storage."""
    storage = str(tmp_path_factory.mktemp("export") / "s.journal")
    study = make_study(storage)
    optuna.create_study(study_name="empty", storage=open_storage(storage))
    return storage, study


def _module(source: str, name: str = "exported") -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


def _ruff(path: Path) -> None:
    """ruff check and ruff format --check under the project's settings."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff is not None, (
        f"ruff is not installed beside {sys.executable} nor on PATH: install the dev extra "
        "(pip install -e '.[dev]'), which the exported files' lint and format checks need"
    )
    config = str(REPO / "pyproject.toml")
    for cmd in (["check", "--no-cache"], ["format", "--check", "--diff", "--no-cache"]):
        done = subprocess.run(
            [ruff, *cmd, "--config", config, str(path)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr


def _design(network: NetworkConfig, number: int = 0, dataset: str | None = None) -> ExportDesign:
    """A design as the exporter sees it; without a dataset its network normalises nothing."""
    return ExportDesign(
        number=number, network=network, params=network_params(network), dataset=dataset
    )


def _isolated(script: str, *args: str, cwd: Path) -> str:
    """Run `script` in a Python that has torch (and what is installed beside it) but cannot
    import this project; returns its stdout."""
    guard = textwrap.dedent(
        """
        import importlib.util, json, sys
        sys.path.extend(json.loads(sys.argv[1]))
        for name in ("search_space", "explorer"):
            if importlib.util.find_spec(name) is not None:
                raise SystemExit(f"{name} is importable: the check would prove nothing")
        """
    )
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            guard + textwrap.dedent(script),
            json.dumps(site),
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# Designs covering every BN placement (stem and block), pool type and wide kind, branch removal,
# several stages of several blocks, both downsamplings and the network-level options.
NETWORKS = {
    "v1": NetworkConfig(block=REFERENCES["v1"]),
    "v2": NetworkConfig(block=REFERENCES["v2"]),
    "v3": NetworkConfig(block=REFERENCES["v3"]),
    "post_act-3x3-no1x1": NetworkConfig(
        block=BlockConfig(0, 8, 16, 4, 8, 8, wide_kind="3x3", pool_type="avg", bn="post_act"),
        stages=(2, 1, 1),
        in_channels=3,
        num_classes=100,
        image_size=32,
        width=1.0,
        dropout=0.2,
        downsample="avg",
        stem_bn=False,
    ),
    "pre-asym5-nopool": NetworkConfig(
        block=BlockConfig(16, 0, 0, 4, 8, 0, wide_kind="asym", asym_n=5, bn="pre"),
        stem_channels=7,
        width=0.3,
        stem_bn=False,
    ),
    "none-stem_bn-one_stage": NetworkConfig(block=REFERENCES["v1"], stem_bn=True, stages=(1,)),
    "post_act-asym3-max": NetworkConfig(
        block=BlockConfig(8, 4, 8, 4, 8, 4, wide_kind="asym", asym_n=3, bn="post_act"),
        stages=(1, 2),
    ),
    # per-stage designs: Inception v3's per-grid layout, and stages that differ in every layer
    # choice (batch norm, pool, wide kind, a removed branch), the last one pre-activation
    "per-stage-v3-grids": reference_network(
        "v3", NetworkConfig(block=REFERENCES["v1"], stages=(1, 1, 1)), per_stage=True
    ),
    "per-stage-none-pre-rgb32": NetworkConfig(
        block=REFERENCES["v1"], in_channels=3, image_size=32, stages=(2, 1), stem_channels=40
    ).with_designs(
        (
            REFERENCES["v1"],
            BlockConfig(16, 0, 0, 4, 8, 16, wide_kind="asym", asym_n=5, pool_type="avg", bn="pre"),
        )
    ),
}


def test_the_designs_cover_every_layer_choice() -> None:
    blocks = [n.block for n in NETWORKS.values()]
    assert {b.bn for b in blocks} == {"none", "post", "pre", "post_act"}
    assert {b.pool_type for b in blocks if b.pool_proj} == {"max", "avg"}
    wide = {(b.wide_kind, b.asym_n if b.wide_kind == "asym" else None) for b in blocks}
    assert wide == {
        ("5x5", None), ("double3x3", None), ("3x3", None), ("asym", 3), ("asym", 5), ("asym", 7)
    }  # fmt: skip


@pytest.mark.parametrize("name", NETWORKS)
def test_standalone_blocks_are_build_network(name: str) -> None:
    """The blocks every export is made of, built from the design's literal keywords."""
    design = _design(NETWORKS[name])
    torch.manual_seed(0)
    ours = standalone.InceptionNet(**network_kwargs(design))
    reference = build_network(design.network)
    assert sum(p.numel() for p in ours.parameters()) == design.params
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    ours.load_state_dict(reference.state_dict())
    size = design.network.image_size
    x = torch.rand(
        3, design.network.in_channels, size, size, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), reference.eval()(x))  # no dataset: mean 0, std 1


def test_the_network_normalises_its_input_and_old_weights_load() -> None:
    """Images in [0, 1] in, the dataset's standardisation inside; state dicts without it load."""
    design = _design(NETWORKS["v2"], dataset="fashion-mnist")
    assert design.inputs.mean == (0.2860,) and design.inputs.std == (0.3530,)
    assert design.inputs.class_names[0] == "T-shirt/top" and len(design.inputs.class_names) == 10
    ours = standalone.InceptionNet(**network_kwargs(design))
    reference = build_network(design.network)
    assert not any(k.startswith("normalize") for k in ours.state_dict())
    ours.load_state_dict(reference.state_dict())  # strict: a weights file of the search loads
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()((x - 0.2860) / 0.3530))
    assert {n for n, _ in ours.named_buffers()} >= {"normalize.mean", "normalize.std"}


def test_exported_blocks_are_the_standalone_module_text() -> None:
    """The building blocks are copied, not generated: the module's text after its docstring."""
    text = Path(standalone.__file__).read_text(encoding="utf-8")
    body = blocks_source()
    assert text.endswith(body) and ast.get_docstring(ast.parse(text)) is not None
    assert ast.get_docstring(ast.parse(body)) is None
    source = render_source(
        [_design(n, i) for i, n in enumerate(NETWORKS.values())],
        study_name="s",
        command="c",
        date=datetime.date.today(),
    )
    tree = ast.parse(source)
    header_end = tree.body[0].end_lineno
    after_header = "".join(source.splitlines(keepends=True)[header_end:]).lstrip("\n")
    assert after_header.startswith(body)
    imported = {
        (a.name if isinstance(n, ast.Import) else n.module).split(".")[0]
        for n in ast.walk(ast.parse(text))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert imported == {"pathlib", "typing", "torch"}  # torch and the standard library only


@pytest.mark.parametrize("name", NETWORKS)
def test_generated_class_reproduces_build_network(name: str, tmp_path: Path) -> None:
    design = _design(NETWORKS[name])
    source = render_source(
        [design],
        study_name="demo",
        command="python -m explorer.export",
        date=datetime.date(2025, 1, 2),
    )
    net = _module(source).Trial0Net()
    torch.manual_seed(0)
    reference = build_network(design.network)
    ours, theirs = net.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert sum(p.numel() for p in net.parameters()) == design.params
    net.load_state_dict(theirs)
    size = design.network.image_size
    x = torch.randn(
        3, design.network.in_channels, size, size, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        assert torch.equal(net.eval()(x), reference.eval()(x))
    path = tmp_path / "net.py"
    path.write_text(source)
    py_compile.compile(str(path), doraise=True)
    _ruff(path)


@pytest.mark.parametrize("name", ["v2", "pre-asym5-nopool"])
def test_keyword_defaults_are_the_design_and_build_its_variants(name: str) -> None:
    """Other depths, widths and kernels given as keywords build what the project would build."""
    network = NETWORKS[name]
    module = _module(
        render_source([_design(network)], study_name="s", command="c", date=datetime.date.today())
    )
    fields = ("ch1x1", "ch3x3_reduce", "ch3x3", "wide_reduce", "wide", "pool_proj")

    def keywords(net: NetworkConfig) -> dict:
        return {
            "depths": tuple(net.stages),
            "widths": tuple(
                tuple(getattr(net.stage_block(s), f) for f in fields)  # plain tuples work too
                for s in range(len(net.stages))
            ),
            "wide_kernels": net.block.wide_kernels(),
            "stem_width": net.stem_width,
        }

    defaults = {
        k: p.default
        for k, p in inspect.signature(module.Trial0Net).parameters.items()
        if k in ("depths", "widths", "wide_kernels", "stem_width")
    }
    assert {k: v if k != "widths" else tuple(map(tuple, v)) for k, v in defaults.items()} == (
        keywords(network)
    )
    wider = dataclasses.replace(network, stages=(2, 1, 2), width=network.width * 1.5)
    block = dataclasses.replace(network.block, wide_kind="asym", asym_n=7)
    variants = [wider, dataclasses.replace(network, block=block)]
    for variant in variants:
        net = module.Trial0Net(**keywords(variant))
        reference = build_network(variant)
        ours, theirs = net.state_dict(), reference.state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
        net.load_state_dict(theirs)
        x = torch.randn(2, network.in_channels, network.image_size, network.image_size)
        with torch.no_grad():
            assert torch.equal(net.eval()(x), reference.eval()(x))
    with pytest.raises(ValueError):
        module.Trial0Net(depths=(1, 1, 1))  # one width row per stage


def test_one_module_for_many_designs_shares_one_block_class(tmp_path: Path) -> None:
    designs = [_design(n, i) for i, n in enumerate(NETWORKS.values())]
    source = render_source(designs, study_name="demo", command="c", date=datetime.date.today())
    tree = ast.parse(source)
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    blocks = [n.name for n in ast.parse(blocks_source()).body if isinstance(n, ast.ClassDef)]
    assert classes == [*blocks, *(f"Trial{i}Net" for i in range(len(designs)))]
    module = _module(source)
    for d in designs:
        assert sum(p.numel() for p in getattr(module, d.class_name)().parameters()) == d.params
    path = tmp_path / "many.py"
    path.write_text(source)
    _ruff(path)


_LOAD_MODULE = """
import torch

def load(path):
    spec = importlib.util.spec_from_file_location("exported", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
"""


def test_module_runs_where_the_project_cannot_be_imported(demo, tmp_path: Path) -> None:
    """Best (with weights) and Pareto exports, imported by a Python that has torch only."""
    storage, study = demo
    [best] = select_trials(study, "best")
    best_file = tmp_path / "best.py"
    export_to_file(study, [best], best_file, weights=True, artifacts=artifact_dir(storage))
    front = select_trials(study, "pareto")
    front_file = tmp_path / "front.py"
    export_to_file(study, front, front_file)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))  # images in [0, 1]
    torch.save(x, tmp_path / "x.pt")
    script = (
        _LOAD_MODULE
        + """
result = {}
for name in ("best", "front"):
    module = load(f"{name}.py")
    for cls in module.__all__:
        if cls.endswith("Net"):
            result[cls] = sum(p.numel() for p in getattr(module, cls)().parameters())
best = load("best.py")
[loader] = [n for n in best.__all__ if n.startswith("load_")]
with torch.no_grad():
    torch.save(getattr(best, loader)()(torch.load("x.pt", weights_only=True)), "y.pt")
print(json.dumps(result))
"""
    )
    counts = json.loads(_isolated(script, cwd=tmp_path))
    recorded = {r.number: r.params for r in study_records(study)}
    assert counts == {f"Trial{n}Net": recorded[n] for n in dict.fromkeys([best, *front])}
    reference = build_network(export_design(study, best).network)
    reference.load_state_dict(trial_weights(study, best, artifact_dir(storage)))
    with torch.no_grad():
        expected = reference.eval()((x - 0.2860) / 0.3530)  # what the search fed it
    torch.testing.assert_close(torch.load(tmp_path / "y.pt", weights_only=True), expected)
    for path in (best_file, front_file):
        py_compile.compile(str(path), doraise=True)
        _ruff(path)


def test_every_layer_choice_round_trips_without_the_project(tmp_path: Path) -> None:
    """One module of every design: each class, with `build_network`'s weights loaded through
    its generated loader in a Python without the project, computes what `build_network` does."""
    designs = [_design(n, i) for i, n in enumerate(NETWORKS.values())]
    source = render_source(
        designs,
        study_name="all",
        command="c",
        date=datetime.date.today(),
        weights_files={d.number: f"all_trial{d.number}.pt" for d in designs},
    )
    (tmp_path / "all.py").write_text(source)
    expected = {}
    for d in designs:
        torch.manual_seed(d.number)
        reference = build_network(d.network).eval()
        torch.save(reference.state_dict(), tmp_path / f"all_trial{d.number}.pt")
        size = d.network.image_size
        x = torch.rand(
            2, d.network.in_channels, size, size, generator=torch.Generator().manual_seed(3)
        )
        torch.save(x, tmp_path / f"x{d.number}.pt")
        with torch.no_grad():
            expected[d.number] = reference(x)
    script = (
        _LOAD_MODULE
        + """
module = load("all.py")
counts = {}
for name in module.__all__:
    if name.startswith("load_trial"):
        number = int(name.removeprefix("load_trial"))
        model = getattr(module, name)()
        counts[number] = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            y = model(torch.load(f"x{number}.pt", weights_only=True))
        torch.save(y, f"y{number}.pt")
print(json.dumps(counts))
"""
    )
    counts = json.loads(_isolated(script, cwd=tmp_path))
    assert counts == {str(d.number): d.params for d in designs}
    for d in designs:
        assert torch.equal(
            torch.load(tmp_path / f"y{d.number}.pt", weights_only=True), expected[d.number]
        )
    _ruff(tmp_path / "all.py")


def test_torch_export_and_torchscript_run_every_exported_class(tmp_path: Path) -> None:
    designs = [
        _design(n, i, "fashion-mnist" if n.in_channels == 1 else None)
        for i, n in enumerate(NETWORKS.values())
    ]
    path = tmp_path / "every.py"  # TorchScript reads the classes' source: import them from a file
    path.write_text(render_source(designs, study_name="s", command="c", date=datetime.date.today()))
    spec = importlib.util.spec_from_file_location("every", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for d in designs:
        model = getattr(module, d.class_name)().eval()
        size = d.network.image_size
        x = torch.rand(
            3, d.network.in_channels, size, size, generator=torch.Generator().manual_seed(4)
        )
        with torch.no_grad():
            eager = model(x)
            exported = torch.export.export(model, (x,))
            torch.testing.assert_close(exported.module()(x), eager)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.script is deprecated"
                scripted = torch.jit.script(model)
            torch.testing.assert_close(scripted(x), eager)
        assert model.cfg is getattr(module, d.cfg_name) and model.cfg == d.inputs


def test_pareto_is_one_class_per_front_design(demo) -> None:
    _, study = demo
    front = [r.number for r in pareto_front(study_records(study))]
    assert select_trials(study, "pareto") == front and len(front) > 1
    tree = ast.parse(export_source(study, front))
    assert [
        n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.startswith("Trial")
    ] == [f"Trial{n}Net" for n in front]


@pytest.mark.parametrize(
    ("max_params", "min_accuracy"), [(None, None), (60_000, None), (None, 0.83), (120_000, 0.8)]
)
def test_best_is_the_most_accurate_design_meeting_the_constraints(demo, max_params, min_accuracy):
    _, study = demo
    meets = [
        r
        for r in study_records(study)
        if r.complete
        and (max_params is None or r.params <= max_params)
        and (min_accuracy is None or r.val_acc >= min_accuracy)
    ]
    [best] = select_trials(study, "best", max_params, min_accuracy)
    assert best == max(meets, key=lambda r: r.val_acc).number
    front = select_trials(study, "pareto", max_params, min_accuracy)
    assert best in front and all(n in {r.number for r in meets} for n in front)


def test_weights_round_trip(demo, tmp_path: Path) -> None:
    storage, study = demo
    number = select_trials(study, "pareto")[0]
    written = export_to_file(
        study, [number], tmp_path / "net.py", weights=True, artifacts=artifact_dir(storage)
    )
    assert written == [tmp_path / "net.py", weights_path(tmp_path / "net.py", number)]
    assert written[1].name == f"net_trial{number}.pt"
    saved = torch.load(written[1], weights_only=True)
    kept = trial_weights(study, number, artifact_dir(storage))
    assert list(saved) == list(build_network(export_design(study, number).network).state_dict())
    assert all(torch.equal(saved[k], kept[k]) for k in kept)
    module = _module((tmp_path / "net.py").read_text())
    module.__file__ = str(tmp_path / "net.py")  # the loader finds the weights beside the module
    model = getattr(module, f"load_trial{number}")()
    assert not model.training
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_header_states_the_facts(demo) -> None:
    _, study = demo
    record = next(r for r in study_records(study) if r.reference == "v2")
    source = export_source(study, [record.number], command="python -m explorer.export --x")
    doc = " ".join(ast.get_docstring(ast.parse(source)).split())
    assert "study 'demo'" in doc and f"trial {record.number}" in doc
    assert "reference design 'v2'" in doc
    assert f"{record.val_acc:.4f}" in doc and f"{record.params:,} parameters" in doc
    assert "test accuracy not measured" in doc and "MFLOPs" in doc
    assert datetime.date.today().isoformat() in doc
    assert "python -m explorer.export --x" in doc
    default = ast.get_docstring(ast.parse(export_source(study, [record.number])))
    assert f"--study demo --trial {record.number}" in default


def test_header_states_the_re_evaluation(demo) -> None:
    _, study = demo
    record = next(r for r in study_records(study) if r.reference == "v1")
    key = f"reeval:{record.number}"
    study.set_user_attr(
        key,
        {
            "test_acc": [0.8, 0.82],
            "val_acc": [0.79, 0.81],
            "budget": "long",
            "test_acc_mean": 0.81,
            "test_acc_std": 0.0141,
            "seeds": 2,
        },
    )
    try:
        doc = " ".join(ast.get_docstring(ast.parse(export_source(study, [record.number]))).split())
        assert (
            "re-evaluated test accuracy 0.8100 ± 0.0141 (mean ± std over 2 seeds, budget long)"
            in doc
        )
        # a budget name that is not a plain word is not pasted into the code
        study.set_user_attr(
            key,
            {"test_acc_mean": 0.81, "test_acc_std": 0.01, "seeds": 2, "budget": 'x"""; import os'},
        )
        source = export_source(study, [record.number])
        assert "import os" not in source and "test accuracy not measured" in source
    finally:
        study.set_user_attr(key, None)


def _hostile_study(tmp_path: Path, network: dict, **attrs) -> optuna.Study:
    study = optuna.create_study(study_name=NASTY, directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["val_acc", "params"])
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.9, 100.0],
            user_attrs={"network": network, "val_acc": 0.9, "params": 100, **attrs},
        )
    )
    return study


def test_storage_text_cannot_break_or_inject_into_the_code(tmp_path: Path) -> None:
    network = NetworkConfig(block=REFERENCES["v1"]).to_dict()
    study = _hostile_study(
        tmp_path, network, reference=NASTY, test_acc="0.99\n'''", flops=float("nan")
    )
    source = export_source(study, [0], command=NASTY)
    tree = ast.parse(source)
    imported = {
        a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert imported == {"Path", "NamedTuple", "torch", "nn"}
    assert not any(isinstance(n, ast.Name) and n.id == "os" for n in ast.walk(tree))
    doc = ast.get_docstring(tree)
    assert "test accuracy not measured" in doc and "FLOPs not recorded" in doc
    assert 'import os; os.system("echo pwned")' in doc  # shown, escaped, as the command
    _module(source).Trial0Net()
    path = tmp_path / "hostile.py"
    path.write_text(source)
    _ruff(path)


@pytest.mark.parametrize(
    "change",
    [
        {"bn": 'post"; import os; "'},
        {"ch1x1": "64"},
        {"wide_kind": "5x5\nimport os"},
        {"evil": 1},
    ],
)
def test_invalid_stored_designs_are_refused(tmp_path: Path, change: dict) -> None:
    network = NetworkConfig(block=REFERENCES["v1"]).to_dict()
    network["block"].update(change)
    study = _hostile_study(tmp_path, network)
    with pytest.raises(ExportError, match="trial 0 cannot be exported: invalid stored design"):
        export_source(study, [0])


def test_weights_problems_are_export_errors(tmp_path: Path) -> None:
    network = NetworkConfig(block=REFERENCES["v1"]).to_dict()
    with pytest.raises(ExportError, match="kept no trained weights"):
        trial_weights(_hostile_study(tmp_path, network), 0, tmp_path)
    with pytest.raises(ExportError, match="malformed weights artifact id"):
        trial_weights(_hostile_study(tmp_path, network, weights="../s.journal"), 0, tmp_path)
    with pytest.raises(ExportError, match="are not in"):
        trial_weights(_hostile_study(tmp_path, network, weights="missing"), 0, tmp_path)
    torch.save({"stem.conv.weight": torch.zeros(1)}, tmp_path / "wrong")
    with pytest.raises(ExportError, match="do not fit its design: missing"):
        trial_weights(_hostile_study(tmp_path, network, weights="wrong"), 0, tmp_path)


def test_bad_requests_are_export_errors(demo) -> None:
    _, study = demo
    assert issubclass(ExportError, ValueError)
    with pytest.raises(ExportError, match="no trials given"):
        export_source(study, [])
    with pytest.raises(ExportError, match="must be an integer"):
        export_source(study, ["3"])
    with pytest.raises(ExportError, match="mode must be one of"):
        select_trials(study, "fastest")


CLI_ERRORS = [
    (["--study", "demo", "--trial", "99"], "study 'demo' has no trial 99"),
    (["--study", "empty", "--best"], "study 'empty' has no complete trials"),
    (
        ["--study", "demo", "--pareto", "--select-max-params", "10"],
        "none of the 12 complete trials",
    ),
]


@pytest.mark.parametrize(("args", "message"), CLI_ERRORS)
def test_cli_bad_arguments_give_one_line_and_status_2(demo, tmp_path, args, message) -> None:
    """`python -m explorer.export` itself, as a user runs it from the repository."""
    storage, _ = demo
    argv = [*args, "--storage", storage, "-o", str(tmp_path / "net.py")]
    done = subprocess.run(
        [sys.executable, "-m", "explorer.export", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(PROG_ERROR + message) and done.stderr.count("\n") == 1
    assert not (tmp_path / "net.py").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope", "--best"], "no study named 'nope'"),
        (["--study", "demo", "--trial", "12"], "trial 12 was pruned, not complete"),
        (["--study", "demo", "--trial", "13"], "trial 13 failed, not complete"),
        (
            ["--study", "demo", "--trial", "1", "--select-max-params", "5"],
            "--select-max-params and --select-min-accuracy",
        ),
        (
            ["--study", "demo", "--best", "--select-min-accuracy", "1.5"],
            "argument --select-min-accuracy",
        ),
        (["--study", "demo"], "one of the arguments --trial --best --pareto is required"),
    ],
)
def test_main_bad_arguments(demo, tmp_path, capsys, args, message) -> None:
    storage, _ = demo
    assert main([*args, "--storage", storage, "-o", str(tmp_path / "net.py")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(PROG_ERROR + message) and err.count("\n") == 1


def test_main_unwritable_output(demo, tmp_path, capsys) -> None:
    storage, _ = demo
    for output, message in [
        (tmp_path / "missing" / "net.py", "does not exist"),
        (tmp_path, "must be a .py file"),
        (tmp_path / "net.txt", "must be a .py file"),
    ]:
        assert main(["--study", "demo", "--storage", storage, "--best", "-o", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(PROG_ERROR) and message in err and err.count("\n") == 1


def test_main_writes_and_says_where(demo, tmp_path, capsys) -> None:
    storage, study = demo
    out_file = tmp_path / "front.py"
    argv = ["--study", "demo", "--storage", storage, "--pareto", "--weights", "-o", str(out_file)]
    assert main(argv) == 0
    front = select_trials(study, "pareto")
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {out_file}: " + ", ".join(f"Trial{n}Net" for n in front)
    assert [line.split(":")[0] for line in printed[1:]] == [
        f"wrote {weights_path(out_file, n)}" for n in front
    ]
    doc = ast.get_docstring(ast.parse(out_file.read_text()))
    assert f"--storage {storage} --pareto --weights -o" in " ".join(doc.split())


def test_the_exporter_knows_every_design_field() -> None:
    """A new design field must be taught to the generator, or it would be dropped silently."""
    assert {f.name for f in dataclasses.fields(NetworkConfig)} == {
        "block", "in_channels", "num_classes", "image_size", "stem_channels", "stages", "width",
        "downsample", "dropout", "stem_bn", "stage_blocks",
    }  # fmt: skip
    assert {f.name for f in dataclasses.fields(BlockConfig)} == {
        "ch1x1", "ch3x3_reduce", "ch3x3", "wide_reduce", "wide", "pool_proj", "wide_kind",
        "asym_n", "pool_type", "bn", "stride",
    }  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_fmnist, one_torch_thread) -> tuple[str, optuna.Study, int]:
    """A real (tiny) search: only the v1 and v2 references (``--trials 0``), trained on the smoke
    budget with their weights kept; v2 (batch norm) is the one exported."""
    from explorer import search
    from tests.test_search import base_args

    folder = tmp_path_factory.mktemp("trained")
    storage = str(folder / "s.journal")
    assert search.main(base_args(folder, tiny_fmnist, trials=0)) == 0
    study = optuna.load_study(study_name="t", storage=open_storage(storage))
    [v2] = [t.number for t in study.trials if t.user_attrs.get("reference") == "v2"]
    return storage, study, v2


def test_a_trained_export_is_as_accurate_on_images_in_0_1(trained, tiny_fmnist, tmp_path) -> None:
    """The test split as ToTensor gives it ([0, 1], no normalisation) into the standalone file
    reaches the accuracy the project's own pipeline measures for the trial's weights."""
    from explorer.training import evaluate, load_dataset

    storage, study, number = trained
    data = load_dataset("fashion-mnist", data_dir=tiny_fmnist, download=False)
    reference = build_network(export_design(study, number).network)
    reference.load_state_dict(trial_weights(study, number, artifact_dir(storage)))
    recorded = study.trials[number].user_attrs.get("test_acc")
    expected = recorded if recorded is not None else evaluate(reference, data, "cpu", "test")[1]
    assert expected > 0.3  # well above chance (0.1): the comparison means something
    export_to_file(
        study, [number], tmp_path / "net.py", weights=True, artifacts=artifact_dir(storage)
    )
    images, labels = data.split("test")
    torch.save((images.float() / 255, labels), tmp_path / "test.pt")
    script = (
        _LOAD_MODULE
        + f"""
module = load("net.py")
model = module.load_trial{number}()
x, y = torch.load("test.pt", weights_only=True)
assert 0 <= x.min() and x.max() <= 1 and tuple(x.shape[1:]) == module.TRIAL{number}_CFG.input_size
with torch.no_grad():
    print((model(x).argmax(1) == y).float().mean().item())
"""
    )
    accuracy = float(_isolated(script, cwd=tmp_path))
    assert abs(accuracy - expected) <= 0.01, (accuracy, expected)


def test_onnx_export_computes_what_pytorch_computes(demo, tmp_path, capsys) -> None:
    """`--format onnx` of a trained design: onnxruntime on batches of any size gives the PyTorch
    outputs, and the file's metadata carries the preprocessing."""
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
    pytest.importorskip("onnxscript", reason="the onnx extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the onnx extra) is not installed")
    storage, study = demo
    [best] = select_trials(study, "best")
    output = tmp_path / "best.onnx"
    argv = [
        "--study",
        "demo",
        "--storage",
        storage,
        "--best",
        "--format",
        "onnx",
        "-o",
        str(output),
    ]
    assert main(argv) == 0
    assert (
        capsys.readouterr().out
        == f"wrote {output}: trial {best} with its trained weights, as ONNX\n"
    )
    model = trained_model(
        export_design(study, best), trial_weights(study, best, artifact_dir(storage))
    )
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    [images] = session.get_inputs()
    assert images.name == "images" and images.shape[1:] == [1, 28, 28]
    for n in (1, 5):
        x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))
        [logits] = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["mean"]) == [0.286] and json.loads(meta["std"]) == [0.353]
    assert json.loads(meta["class_names"])[9] == "Ankle boot" and meta["input_range"] == "[0, 1]"


def test_onnx_without_the_extra_says_how_to_install_it(demo, tmp_path, capsys, monkeypatch):
    storage, _ = demo
    monkeypatch.setattr(export_files, "ONNX_PACKAGES", ("onnx_is_not_installed_here",))
    output = tmp_path / "net.onnx"
    argv = [
        "--study",
        "demo",
        "--storage",
        storage,
        "--best",
        "--format",
        "onnx",
        "-o",
        str(output),
    ]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(PROG_ERROR + "--format onnx needs") and "pip install -e '.[onnx]'" in err
    assert not output.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pareto", "-o", "front.onnx"], "--format onnx writes one trial, got"),
        (["--best", "-o", "best.py"], "the output must be a .onnx file"),
        (["--trial", "12", "-o", "x.onnx"], "trial 12 was pruned"),
    ],
)
def test_onnx_bad_requests_are_one_line_and_status_2(
    demo, tmp_path, capsys, monkeypatch, args, message
):
    storage, _ = demo
    monkeypatch.chdir(tmp_path)
    assert main(["--study", "demo", "--storage", storage, "--format", "onnx", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(PROG_ERROR + message) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
