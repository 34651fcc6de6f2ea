"""The memory budget: default blocks shrink as the factor grows, a chunk that needs more input
than the budget is computed in pieces by its one task, and blocks smaller than the output's
shards share them safely; results stay exact (tensorstore, scikit-image)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorstore as ts
import zarr
from reference import random_array, skimage_downsample

from bioimage_tasks import copy as plain_copy
from bioimage_tasks import downsample as plain_downsample
from bioimage_tasks.budget import block_bytes
from bioimage_tasks.io import as_source
from bioimage_tasks.planning import plan_blockwise
from bioimage_tasks.resampling import ResizedSource, WindowedSource
from bioimage_tasks.runners import RunnerConfig
from flows import copy_flow, downsample_flow

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_blocks_shrink_with_the_factor_and_pieces_fit_the_budget(tmp_path):
    source = as_source(np.zeros((256, 256, 256), np.uint32))
    budget = 2**24
    shapes = {}
    for factor in (2, 4, 8, 16):
        view = WindowedSource(source, (factor,) * 3, "mode")
        plan = plan_blockwise(view, f"{tmp_path}/x{factor}.zarr/out", memory_budget=budget)
        shapes[factor] = plan.grid.block_shape
        piece = plan.piece_shape or plan.grid.block_shape
        assert block_bytes(view, piece) <= budget
        assert math.prod(piece) >= 1
    assert math.prod(shapes[2]) > math.prod(shapes[16])
    assert (
        plan_blockwise(
            WindowedSource(source, (16,) * 3, "mode"),
            f"{tmp_path}/y.zarr/out",
            memory_budget=budget,
        ).piece_shape
        is not None
    )


@pytest.mark.parametrize(
    "method, run",
    [
        ("mode", downsample_flow),
        ("mean", downsample_flow),
        ("stride", downsample_flow),
        ("mode", plain_downsample),
    ],
)
def test_large_factor_in_pieces_is_exact(tmp_path, rng, method, run):
    labels = rng.integers(0, 4, (96, 80, 72)).astype(np.uint32)
    config = RunnerConfig(memory_budget=2**20)  # a 16x16x16 output chunk needs 64 MB of input
    view = WindowedSource(as_source(labels), (16, 16, 16), method)
    plan = plan_blockwise(view, f"{tmp_path}/plan.zarr/out", memory_budget=config.memory_budget)
    assert block_bytes(view, plan.piece_shape or plan.grid.block_shape) <= config.memory_budget
    assert (plan.piece_shape is not None) == (
        method != "stride"
    )  # stride reads only the voxels it keeps
    result = run(
        labels, 16, f"{tmp_path}/out.zarr/s4", method=method, num_workers=2, job_config=config
    )
    expected = ts.downsample(ts.array(labels), [16, 16, 16], method).read().result()
    np.testing.assert_array_equal(result[:], expected)


def test_resize_in_pieces_is_exact(tmp_path, rng):
    image = random_array(rng, (60, 52, 44), "uint8")
    config = RunnerConfig(memory_budget=2**20)
    plan = plan_blockwise(
        ResizedSource(as_source(image), (8, 7, 6), 1, True),
        f"{tmp_path}/p.zarr/o",
        memory_budget=config.memory_budget,
    )
    assert plan.piece_shape is not None
    result = downsample_flow(
        image, 8, f"{tmp_path}/out.zarr/s3", order=1, anti_aliasing=True, job_config=config
    )
    expected = np.clip(np.rint(skimage_downsample(image, (8, 8, 8), 1, True)), 0, 255).astype(
        np.uint8
    )
    np.testing.assert_array_equal(result[:], expected)


@pytest.mark.parametrize("copy", [copy_flow, plain_copy], ids=["flow", "plain"])
def test_blocks_smaller_than_shards_share_them_safely(tmp_path, rng, copy):
    """Blocks of 4**3 in shards of 16**3: blocks of one shard run in one task, one after the other,
    so no update is lost, on threads and with a mask."""
    image = random_array(rng, (40, 36, 34), "uint16")
    out = zarr.create_array(
        store=f"{tmp_path}/out.zarr",
        name="copy",
        shape=image.shape,
        dtype="uint16",
        chunks=(4, 4, 4),
        shards=(16, 16, 16),
    )
    copy(image, f"{tmp_path}/out.zarr/copy", block_shape=(4, 4, 4), num_workers=4)
    np.testing.assert_array_equal(out[:], image)
    mask = rng.random(image.shape) < 0.5
    before = out[:]
    masked = zarr.create_array(
        store=f"{tmp_path}/out.zarr",
        name="masked",
        shape=image.shape,
        dtype="uint16",
        chunks=(4, 4, 4),
        shards=(16, 16, 16),
    )
    masked[:] = before // 2
    copy(image, f"{tmp_path}/out.zarr/masked", block_shape=(6, 4, 4), mask=mask, num_workers=4)
    np.testing.assert_array_equal(masked[:], np.where(mask, image, before // 2))
