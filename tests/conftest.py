"""Shared fixtures: a small learnable dataset in Fashion-MNIST's file format, and PostgreSQL."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import uuid
from pathlib import Path

import numpy as np
import pytest

FMNIST_FILES = {
    "train-images-idx3-ubyte.gz": "train_x",
    "train-labels-idx1-ubyte.gz": "train_y",
    "t10k-images-idx3-ubyte.gz": "test_x",
    "t10k-labels-idx1-ubyte.gz": "test_y",
}


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (the MNIST family's format)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def synthetic_images(
    n: int, seed: int, size: int = 28, classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright horizontal band at a class-dependent height, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.int32)
    band = size // classes
    for c in range(classes):
        rows = slice(c * band, c * band + band)
        x[y == c, rows, :] += 150
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory) -> Path:
    """A folder holding 8,000 train (5,000 become validation) and 1,000 test images in Fashion-MNIST's four files."""
    folder = tmp_path_factory.mktemp("fmnist")
    train_x, train_y = synthetic_images(8000, seed=1)
    test_x, test_y = synthetic_images(1000, seed=2)
    arrays = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    for name, key in FMNIST_FILES.items():
        write_idx(folder / name, arrays[key])
    return folder


def pytest_collection_modifyitems(config, items) -> None:
    """Skip the tests marked ``gpu`` where torch sees no CUDA device, saying so."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


def _postgres_url() -> str | None:
    url = os.environ.get("EXPLORER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return url
    except Exception:  # noqa: BLE001 - any failure means no usable server
        return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A reachable PostgreSQL URL (its database is only used to create and drop others);
    outside CI the test is skipped when there is none."""
    url = _postgres_url()
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide PostgreSQL (EXPLORER_TEST_POSTGRES) but none is reachable")
        pytest.skip("no PostgreSQL server reachable (set EXPLORER_TEST_POSTGRES to run this test)")
    return url


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A URL to a freshly created, empty database (no Optuna tables yet), dropped afterwards:
    every test goes through the first-start path that a new team database goes through."""
    import psycopg

    plain = postgres_server.replace("postgresql+psycopg", "postgresql")
    base, _, _ = plain.rpartition("/")
    name = f"explorer_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_study_name(postgres_url):
    """A study name for a test's fresh database."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of small nets: on a shared CPU two threads oversubscribe
    it (a train step took 20x longer in a measurement with other work running)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory) -> Path:
    """A seeded journal study "demo" (v1, v2 and 6 search designs, no weights), made once per
    module; tests take copies (`study_path`)."""
    from tests.helpers import make_study

    path = tmp_path_factory.mktemp("template") / "s.journal"
    make_study(str(path), name="demo", n_search=6, weights=False)
    return path


@pytest.fixture
def study_path(demo_template, tmp_path) -> str:
    """A fresh copy of the "demo" study (a journal file copies whole)."""
    path = tmp_path / "s.journal"
    shutil.copyfile(demo_template, path)
    return str(path)


@pytest.fixture(autouse=True)
def no_one_branch_trial(request):
    """No trial of any test search fails as a one-branch design: the space cannot propose one
    (its "at least two branches" rule is part of the space, not a failure after sampling). Checked
    in every journal a test leaves under its tmp_path, in this process or a worker's."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if tmp is None:
        return
    from tests.helpers import one_branch_failures

    if found := one_branch_failures(Path(tmp)):
        pytest.fail(f"a trial failed as a one-branch design in {', '.join(p.name for p in found)}")
