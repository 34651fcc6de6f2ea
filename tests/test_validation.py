"""Bad input is rejected before any output voxel is written: an existing output keeps its data,
a new output path is never created, and each message names the parameter and what was expected."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import zarr
from helpers import zarr_input

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.runners import RunnerConfig, SlurmConfig
from flows import copy_flow, downsample_flow, pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

SHAPE = (20, 22, 18)
OUT_SHAPE = (10, 11, 9)
SENTINEL = 99


@pytest.fixture
def setup(tmp_path, rng):
    image = rng.integers(0, 1000, SHAPE).astype(np.uint16)
    zarr_input(tmp_path, image, (8, 8, 8))
    existing = zarr.create_array(
        store=str(tmp_path / "out.zarr"),
        name="s1",
        shape=OUT_SHAPE,
        dtype="uint16",
        chunks=(4, 4, 4),
    )
    existing[:] = SENTINEL
    return tmp_path


BAD_CALLS = [  # (keyword changes, exception, message pattern)
    (
        {"scale_factor": (2, 2)},
        ParameterError,
        r"scale_factor must have one entry per input axis \(3\)",
    ),
    ({"scale_factor": (2, 0, 2)}, ParameterError, r"scale_factor entries must be >= 1"),
    ({"scale_factor": 1.5}, ParameterError, r"scale_factor must be an int"),
    ({"scale_factor": (2, 2.5, 2)}, ParameterError, r"scale_factor entries must be integers"),
    ({"order": 6}, ParameterError, r"order must be an integer from 0 to 5"),
    ({"order": -1}, ParameterError, r"order must be an integer from 0 to 5"),
    ({"job_type": "cloud"}, ParameterError, r"job_type must be one of"),
    (
        {"job_type": "subprocess", "output": None},
        ParameterError,
        r"job_type='subprocess' needs an output",
    ),
    ({"job_type": "dask"}, ParameterError, r"DaskConfig.address must name the scheduler"),
    ({"method": "bilinear"}, ParameterError, r"method must be one of"),
    (
        {"method": "mode", "order": 1},
        ParameterError,
        r"order and anti_aliasing apply to method='resize' only",
    ),
    ({"num_workers": 0}, ParameterError, r"num_workers must be an integer >= 1"),
    (
        {"job_config": {"cores": 4}},
        ParameterError,
        r"job_config for job_type='local' takes RunnerConfig fields",
    ),
    ({"job_config": "fast"}, ParameterError, r"job_config must be a RunnerConfig"),
    (
        {"job_type": "subprocess", "job_config": SlurmConfig()},
        ParameterError,
        r"job_config must be a LocalClusterConfig",
    ),
    (
        {"mask": np.ones((3, 3, 3), bool)},
        ParameterError,
        r"mask has shape \(3, 3, 3\), expected the output shape \(10, 11, 9\)",
    ),
    ({"input": "missing.zarr/raw"}, FileNotFoundError, r"input: no zarr array"),
    ({"input": "not-a-container/raw"}, ParameterError, r"input must be 'path/container.zarr/key'"),
    ({"mask": "missing.zarr/mask"}, FileNotFoundError, r"mask: no zarr array"),
    (
        {"block_ids": [0, 10_000]},
        ParameterError,
        r"block_ids must lie in \[0, 1\) for a grid of \(1, 1, 1\)",
    ),
    ({"block_ids": 3}, ParameterError, r"block_ids must be a sequence of integers"),
    (
        {"block_ids": [0], "resume_from": "some-run"},
        ParameterError,
        r"block_ids and resume_from cannot be combined",
    ),
    ({"block_shape": (4, 4)}, ParameterError, r"block_shape must be 3 positive integers"),
    ({"block_shape": (0, 4, 4)}, ParameterError, r"block_shape must be 3 positive integers"),
    ({"block_shape": (-4, 4, 4)}, ParameterError, r"block_shape must be 3 positive integers"),
    ({"block_shape": (4.5, 4, 4)}, ParameterError, r"block_shape must be 3 positive integers"),
]


@pytest.mark.parametrize(
    "changes,error,pattern", BAD_CALLS, ids=[str(c[0])[:40] for c in BAD_CALLS]
)
def test_bad_input_leaves_existing_output_untouched(setup, changes, error, pattern):
    kwargs = {
        "input": f"{setup}/in.zarr/raw",
        "scale_factor": 2,
        "output": f"{setup}/out.zarr/s1",
    } | changes
    for key in ("input", "mask"):
        if isinstance(kwargs.get(key), str) and kwargs[key].startswith("missing"):
            kwargs[key] = f"{setup}/{kwargs[key]}"
    with pytest.raises(error, match=pattern):
        downsample_flow(**kwargs)
    assert np.all(zarr.open_array(str(setup / "out.zarr"), path="s1")[:] == SENTINEL)


def test_bad_input_creates_no_new_output(setup):
    with pytest.raises(ValueError, match="order"):
        downsample_flow(f"{setup}/in.zarr/raw", 2, f"{setup}/new.zarr/s1", order=9)
    with pytest.raises(ValueError, match="block_ids"):
        downsample_flow(f"{setup}/in.zarr/raw", 2, f"{setup}/new.zarr/s1", block_ids=[-1])
    assert not os.path.exists(setup / "new.zarr")


BAD_BLOCK_IDS = [  # (block_ids, message pattern) on a grid of 3 x 3 x 3 blocks
    ([], r"block_ids is empty"),
    (np.array([], np.int64), r"block_ids is empty"),
    ([-1], r"block_ids must lie in \[0, 27\)"),
    ([0, 27], r"block_ids must lie in \[0, 27\).*got 27"),
    ([1.0], r"block_ids must be integers, got 1.0"),
    ([True], r"block_ids must be integers, got True"),
    (["3"], r"block_ids must be integers"),
    ([2, 5, 2], r"block_ids must not repeat ids; repeated: \[2\]"),
    ("0,1", r"block_ids must be a sequence of integers"),
]


@pytest.mark.parametrize("flow", ["downsample", "copy"])
@pytest.mark.parametrize(
    "block_ids,pattern", BAD_BLOCK_IDS, ids=[repr(c[0])[:20] for c in BAD_BLOCK_IDS]
)
def test_bad_block_ids_create_nothing(setup, flow, block_ids, pattern):
    """Malformed block_ids are refused before the output (or its ownership file) exists, for a
    path output and for a numpy result (which would otherwise come back all zeros)."""
    new = f"{setup}/new.zarr/s1"
    if flow == "downsample":
        run = functools.partial(downsample_flow, f"{setup}/in.zarr/raw", 2, block_shape=(4, 4, 4))
    else:
        source = zarr.open_array(str(setup / "in.zarr"), path="raw")[::2, ::2, ::2]
        run = functools.partial(copy_flow, source, block_shape=(4, 4, 4))
    for output in (new, None):
        with pytest.raises(ParameterError, match=pattern):
            run(output=output, block_ids=block_ids)
    assert not os.path.exists(setup / "new.zarr")


def test_output_shape_and_dtype_are_checked(setup, rng):
    with pytest.raises(ValueError, match=r"output has shape \(10, 11, 9\), expected \(7, 8, 6\)"):
        downsample_flow(f"{setup}/in.zarr/raw", 3, f"{setup}/out.zarr/s1")
    small = zarr.create_array(
        store=str(setup / "out.zarr"), name="u8", shape=OUT_SHAPE, dtype="uint8"
    )
    with pytest.raises(ValueError, match="output dtype uint8 cannot hold the result dtype uint16"):
        downsample_flow(f"{setup}/in.zarr/raw", 2, small)
    with pytest.raises(ValueError, match="output has shape"):
        copy_flow(f"{setup}/in.zarr/raw", f"{setup}/out.zarr/s1")
    assert np.all(zarr.open_array(str(setup / "out.zarr"), path="s1")[:] == SENTINEL)


def test_bool_input_rejects_interpolation(rng):
    labels = rng.random((8, 8)) > 0.5
    with pytest.raises(ValueError, match="bool input needs order=0 and anti_aliasing=False"):
        downsample_flow(labels, 2, order=1)
    with pytest.raises(ValueError, match="bool input needs order=0 and anti_aliasing=False"):
        downsample_flow(labels, 2, anti_aliasing=True)


@pytest.mark.parametrize("method", ["mean", "mode", "stride"])
def test_complex_input_is_refused_by_window_methods(tmp_path, method):
    x = np.ones((8, 8, 8), np.complex64)
    calls = [
        (downsample_flow, {"scale_factor": 2, "output": f"{tmp_path}/new.zarr/s1"}),
        (pyramid_flow, {"output_group": f"{tmp_path}/new.zarr", "scale_factors": [2]}),
    ]
    for flow, kwargs in calls:
        pattern = rf"input has dtype complex64, which method='{method}' does not take"
        with pytest.raises(ParameterError, match=pattern):
            flow(x, method=method, **kwargs)
    assert not os.path.exists(tmp_path / "new.zarr")


def test_runner_config_is_checked():
    with pytest.raises(ValueError, match="blocks_per_task must be >= 1"):
        RunnerConfig(blocks_per_task=0)


def test_blocks_per_task_bounds_task_count(rng):
    x = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    result = downsample_flow(x, 2, block_shape=(4, 4), job_config=RunnerConfig(blocks_per_task=5))
    np.testing.assert_array_equal(result, x[1::2, 1::2])


@pytest.mark.parametrize(
    "array,pattern",
    [
        (np.zeros((0, 8, 8), np.uint8), r"input is empty \(shape \(0, 8, 8\)\)"),
        (np.array(3, np.uint8), r"input is a 0-D array"),
        (np.zeros((4, 4), object), r"input has dtype object"),
        (np.zeros((4, 4), "U3"), r"input has dtype <U3 \(str\)"),
        (np.zeros((4, 4), "S3"), r"input has dtype \|S3 \(bytes\)"),
        (np.zeros((4, 4), "V4"), r"input has dtype \|V4 \(void\)"),
    ],
    ids=["empty", "0-D", "object", "str", "bytes", "void"],
)
def test_arrays_nothing_can_be_computed_from(array, pattern, tmp_path):
    for flow, args in (
        (downsample_flow, (array, 2)),
        (copy_flow, (array, f"{tmp_path}/new.zarr/x")),
    ):
        with pytest.raises(ValueError, match=pattern):
            flow(*args)
    assert not os.path.exists(tmp_path / "new.zarr")


def test_bad_mask_array_is_named(setup):
    with pytest.raises(ParameterError, match=r"mask has dtype object"):
        downsample_flow(
            f"{setup}/in.zarr/raw", 2, f"{setup}/out.zarr/s1", mask=np.zeros(OUT_SHAPE, object)
        )
    assert np.all(zarr.open_array(str(setup / "out.zarr"), path="s1")[:] == SENTINEL)


def test_output_that_is_the_input_is_refused(setup):
    array = zarr.open_array(str(setup / "out.zarr"), path="s1", mode="r+")
    same = [
        (array, array),
        (f"{setup}/out.zarr/s1", f"{setup}/out.zarr/s1"),
        (f"{setup}/out.zarr/s1", zarr.open_array(f"{setup}/out.zarr/s1", mode="r+")),
        (f"{setup}/./out.zarr/s1", f"{setup}/out.zarr/s1/"),
    ]
    for source, output in same:
        with pytest.raises(ParameterError, match="is the input"):
            copy_flow(source, output)
    with pytest.raises(ParameterError, match="is the input"):
        downsample_flow(array, 1, array, order=1)
    x = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    with pytest.raises(ParameterError, match="is the input"):
        copy_flow(x, x[:, :, :])
    assert np.all(array[:] == SENTINEL)


def test_output_that_is_a_group_or_holds_other_arrays_is_refused(setup):
    """An output path must name an array: the container `out.zarr` (a group holding s1), or a
    bare container without root metadata holding an array, are refused before any write."""
    from bioimage_tasks.errors import ParameterError

    os.makedirs(setup / "bare.zarr")
    zarr.create_array(store=str(setup / "bare.zarr" / "raw"), shape=(4, 4), dtype="uint8")
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(setup) for f in names)
    for flow, args in ((copy_flow, ()), (downsample_flow, (1,))):
        with pytest.raises(ParameterError, match=r"out.zarr' is a group, not an array: give a new"):
            flow(f"{setup}/in.zarr/raw", *args, f"{setup}/out.zarr")
        with pytest.raises(ParameterError, match=r"bare.zarr' is a folder holding \['raw'\]"):
            flow(f"{setup}/in.zarr/raw", *args, f"{setup}/bare.zarr/")
    assert sorted(os.path.join(d, f) for d, _, names in os.walk(setup) for f in names) == files
    assert np.all(zarr.open_array(str(setup / "out.zarr"), path="s1")[:] == SENTINEL)


def test_output_paths_are_normalised(setup, monkeypatch):
    monkeypatch.chdir(setup)
    image = zarr.open_array(str(setup / "in.zarr"), path="raw", mode="r")[:]
    copy_flow("in.zarr/raw", "./c.zarr/./a")
    copy_flow("./in.zarr//raw", "c.zarr//b/")
    assert sorted(os.listdir(setup / "c.zarr")) == ["a", "b", "zarr.json"]
    for name in ("a", "b"):
        copied = zarr.open_array(str(setup / "c.zarr"), path=name, mode="r")
        np.testing.assert_array_equal(copied[:], image)
    with pytest.raises(ValueError, match=r"output: '..' inside a container is not a key"):
        copy_flow("in.zarr/raw", "c.zarr/a/../b")


def test_downscale_shape_takes_an_int_or_per_axis_factors():
    from bioimage_tasks.geometry import downscale_shape

    assert (
        downscale_shape((37, 41, 23), 2) == downscale_shape((37, 41, 23), (2, 2, 2)) == (19, 21, 12)
    )
    assert downscale_shape((37, 41, 23), (1, 2, 3)) == (37, 21, 8)
    with pytest.raises(ValueError, match=r"scale_factor must have one entry per input axis \(3\)"):
        downscale_shape((37, 41, 23), (2, 2))
    with pytest.raises(ValueError, match="scale_factor entries must be >= 1"):
        downscale_shape((37, 41, 23), 0)


def test_resized_source_checks_like_the_flows(rng):
    from bioimage_tasks.io import as_source
    from bioimage_tasks.resampling import ResizedSource, WindowedSource

    source = as_source(rng.integers(0, 255, (8, 10, 12), dtype=np.uint8))
    view = ResizedSource(source, (4, 5, 6), order=1)
    assert view.ndim == 3 == WindowedSource(source, (2, 2, 2), "mean").ndim
    with pytest.raises(ValueError, match=r"shape must have one entry per input axis \(3\)"):
        ResizedSource(source, (4, 5))
    with pytest.raises(ValueError, match="shape entries must be integers >= 1"):
        ResizedSource(source, (4, 0, 6))
    for order in (6, -1, 1.5, True):  # the flows' own message for each
        with pytest.raises(ValueError, match="order must be an integer from 0 to 5") as from_view:
            ResizedSource(source, (4, 5, 6), order=order)
        with pytest.raises(ValueError, match="order must be an integer from 0 to 5") as from_flow:
            downsample_flow(source.array, 2, order=order)
        assert str(from_view.value) == str(from_flow.value)
    with pytest.raises(ValueError, match="anti_aliasing must be True or False"):
        ResizedSource(source, (4, 5, 6), anti_aliasing="yes")
