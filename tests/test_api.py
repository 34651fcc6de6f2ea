"""The plain API: no Prefect loaded or contacted, the same outputs as the flows on every backend,
and the command line on the plain engine unless a Prefect API is configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import free_port, zarr_input
from reference import random_array, skimage_downsample

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS_DIR)
SHAPE = (40, 36, 30)

# Runs the plain API in a child process whose PREFECT_API_URL is a closed port: any contact with
# Prefect would fail there. Prints the Prefect modules loaded at the end, as JSON.
PLAIN_CHILD = """
import json, sys
import bioimage_tasks as bt
from bioimage_tasks.runners import LocalClusterConfig
root, job_type = sys.argv[1], sys.argv[2]
config = LocalClusterConfig() if job_type == "subprocess" else None
kwargs = dict(job_type=job_type, num_workers=2, job_config=config)
bt.downsample(
    f"{root}/in.zarr/raw", 2, f"{root}/plain.zarr/mean", method="mean", block_shape=(8, 8, 8),
    **kwargs,
)
bt.downsample(
    f"{root}/in.zarr/raw", (1, 2, 3), f"{root}/plain.zarr/resize", order=1, anti_aliasing=True,
    **kwargs,
)
bt.copy(f"{root}/in.zarr/raw", f"{root}/plain.n5/copy", block_shape=(16, 16, 16), **kwargs)
bt.pyramid(f"{root}/in.zarr/raw", f"{root}/plain-pyramid.zarr", levels=2, method="mode", **kwargs)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "prefect_dask"))))
"""


@pytest.fixture
def volume(tmp_path):
    image = random_array(np.random.default_rng(5), SHAPE, "uint16")
    zarr_input(tmp_path, image, (16, 16, 16))
    return tmp_path, image


def child_env(**extra: str) -> dict[str, str]:
    paths = [REPO, TESTS_DIR, os.environ.get("PYTHONPATH")]
    return os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, paths))} | extra


def test_import_loads_no_prefect():
    code = (
        "import sys, bioimage_tasks, bioimage_tasks.cli; "
        "print([m for m in sys.modules if 'prefect' in m])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=child_env()
    )
    assert done.stdout.strip() == "[]"


def read(path: str) -> np.ndarray:
    container, key = path.split(".zarr/") if ".zarr/" in path else path.split(".n5/")
    driver = "zarr3" if ".zarr/" in path else "n5"
    suffix = ".zarr" if driver == "zarr3" else ".n5"
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": f"{container}{suffix}/{key}"}}
    return ts.open(spec).result().read().result()


@pytest.mark.parametrize("job_type", ["local", pytest.param("subprocess", marks=pytest.mark.slow)])
def test_plain_api_equals_the_flows_without_contacting_prefect(prefect_server, volume, job_type):
    from flows import copy_flow, downsample_flow, pyramid_flow

    root, image = volume
    closed = f"http://127.0.0.1:{free_port()}/api"
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_CHILD, str(root), job_type],
        capture_output=True,
        text=True,
        env=child_env(PREFECT_API_URL=closed),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # no Prefect module loaded at all
    downsample_flow(
        f"{root}/in.zarr/raw", 2, f"{root}/flow.zarr/mean", method="mean", block_shape=(8, 8, 8)
    )
    downsample_flow(
        f"{root}/in.zarr/raw", (1, 2, 3), f"{root}/flow.zarr/resize", order=1, anti_aliasing=True
    )
    copy_flow(f"{root}/in.zarr/raw", f"{root}/flow.n5/copy", block_shape=(16, 16, 16))
    pyramid_flow(f"{root}/in.zarr/raw", f"{root}/flow-pyramid.zarr", levels=2, method="mode")
    mean = ts.downsample(ts.array(image), [2, 2, 2], "mean").read().result()
    assert np.array_equal(read(f"{root}/plain.zarr/mean"), mean)
    resized = np.clip(np.rint(skimage_downsample(image, (1, 2, 3), 1, True)), 0, 65535).astype(
        np.uint16
    )
    assert np.array_equal(read(f"{root}/plain.zarr/resize"), resized)
    assert np.array_equal(read(f"{root}/plain.n5/copy"), image)
    for level in (1, 2):
        mode = ts.downsample(ts.array(image), [2**level] * 3, "mode").read().result()
        assert np.array_equal(read(f"{root}/plain-pyramid.zarr/s{level}"), mode)
    for name in ("zarr/mean", "zarr/resize", "n5/copy"):
        assert np.array_equal(read(f"{root}/plain.{name}"), read(f"{root}/flow.{name}"))
    for level in (0, 1, 2):
        assert np.array_equal(
            read(f"{root}/plain-pyramid.zarr/s{level}"), read(f"{root}/flow-pyramid.zarr/s{level}")
        )
    plain_attrs = zarr.open_group(str(root / "plain-pyramid.zarr")).attrs.asdict()
    assert plain_attrs == zarr.open_group(str(root / "flow-pyramid.zarr")).attrs.asdict()


def test_flow_fn_runs_plainly_outside_a_flow_run():
    from flows import downsample_flow

    x = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6)
    got = downsample_flow.fn(x, 2, method="mean")
    assert np.array_equal(got, ts.downsample(ts.array(x), [2, 2], "mean").read().result())


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bioimage_tasks.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_cli_runs_plainly_without_a_prefect_api(volume, tmp_path):
    root, image = volume
    home = tmp_path / "prefect-home"  # no profile: no API configured
    env = {k: v for k, v in child_env(PREFECT_HOME=str(home)).items() if k != "PREFECT_API_URL"}
    done = run_cli(
        "downsample", f"{root}/in.zarr/raw", f"{root}/cli.zarr/s1", "--method", "max", env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0].startswith(
        "bioimage-tasks downsample: running on the plain engine"
    )
    assert np.array_equal(
        read(f"{root}/cli.zarr/s1"), ts.downsample(ts.array(image), [2] * 3, "max").read().result()
    )
    assert not home.exists()  # Prefect never imported: it would have created its home


def test_cli_runs_as_a_flow_run_when_an_api_is_configured(prefect_server, volume):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    root, image = volume
    done = run_cli(
        "copy",
        f"{root}/in.zarr/raw",
        f"{root}/cli.zarr/copy",
        env=child_env(PREFECT_API_URL=PREFECT_API_URL.value()),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0].startswith(
        "bioimage-tasks copy: running as a Prefect flow run"
    )
    assert np.array_equal(read(f"{root}/cli.zarr/copy"), image)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    assert any(r.parameters.get("output") == f"{root}/cli.zarr/copy" for r in runs)


def test_relative_paths_work_for_zarr_and_n5(tmp_path, monkeypatch):
    """Paths relative to the working directory, as a user types them, for every container kind
    (tensorstore's file kvstore refuses relative paths: we hand it absolute ones)."""
    import bioimage_tasks as bt

    monkeypatch.chdir(tmp_path)
    data = random_array(np.random.default_rng(3), (12, 10, 9), np.uint16)
    bt.copy(data, "in.zarr/raw")
    bt.copy("in.zarr/raw", "copy.n5/raw")
    bt.downsample("copy.n5/raw", 2, "down.n5/s1", method="mean")
    bt.copy("copy.n5/raw", "back.zarr/raw")
    np.testing.assert_array_equal(zarr.open_array("back.zarr/raw")[:], data)
    expected = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(tmp_path / "copy.n5")},
            "path": "raw",
        }
    ).result()
    np.testing.assert_array_equal(expected.read().result(), data)
    mean = ts.downsample(ts.array(data), [2, 2, 2], "mean").read().result()
    np.testing.assert_array_equal(read(f"{tmp_path}/down.n5/s1"), mean)
