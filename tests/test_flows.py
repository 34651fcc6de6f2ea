"""The flows on the real Prefect engine (local threads): every input and output kind, masks,
block ids, workers, and failure reports, each checked against scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import tensorstore as ts
import zarr
from reference import assert_matches_skimage, random_array, reference_shape, skimage_downsample

from bioimage_tasks import BlockGrid, BlocksFailedError, ResizedSource, as_source
from bioimage_tasks.blockwise import BlockJob, process_batch
from bioimage_tasks.io import ArraySource
from bioimage_tasks.records import BlockRecords
from flows import copy_flow, downsample_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

SHAPE = (37, 41, 23)


@pytest.fixture
def image(rng) -> np.ndarray:
    return random_array(rng, SHAPE, "uint16")


def write_zarr(path, x, chunks, zarr_format=3, name="raw"):
    array = zarr.create_array(
        store=str(path),
        name=name,
        shape=x.shape,
        dtype=x.dtype,
        chunks=chunks,
        zarr_format=zarr_format,
    )
    array[:] = x
    return array


def write_n5(path, x, chunks):
    spec = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(path)},
        "path": "raw",
        "metadata": {
            "dimensions": list(x.shape),
            "blockSize": list(chunks),
            "dataType": x.dtype.name,
            "compression": {"type": "gzip"},
        },
    }
    store = ts.open(spec, create=True).result()
    store.write(x).result()
    return store


def read(result) -> np.ndarray:
    return result.read().result() if isinstance(result, ts.TensorStore) else np.asarray(result[...])


@pytest.mark.parametrize(
    "kind", ["numpy", "zarr-v3-path", "zarr-v2-path", "zarr-array", "n5-path", "tensorstore"]
)
def test_every_input_kind_matches_skimage(tmp_path, image, kind):
    chunks = (16, 16, 8)
    inputs = {
        "numpy": lambda: image,
        "zarr-v3-path": lambda: (
            write_zarr(tmp_path / "in.zarr", image, chunks),
            f"{tmp_path}/in.zarr/raw",
        )[1],
        "zarr-v2-path": lambda: (
            write_zarr(tmp_path / "in.zarr", image, chunks, 2),
            f"{tmp_path}/in.zarr/raw",
        )[1],
        "zarr-array": lambda: write_zarr(tmp_path / "in.zarr", image, chunks, 2),
        "n5-path": lambda: (write_n5(tmp_path / "in.n5", image, chunks), f"{tmp_path}/in.n5/raw")[
            1
        ],
        "tensorstore": lambda: write_n5(tmp_path / "in.n5", image, chunks),
    }
    result = downsample_flow(
        inputs[kind](),
        (2, 3, 1),
        f"{tmp_path}/out.zarr/s1",
        order=1,
        anti_aliasing=True,
        num_workers=2,
    )
    assert isinstance(result, zarr.Array)
    assert_matches_skimage(read(result), image, (2, 3, 1), 1, True)


@pytest.mark.parametrize("order,anti_aliasing", [(1, True), (3, False)])
def test_complex_input_is_resized_part_by_part(tmp_path, rng, order, anti_aliasing):
    # the value range each part is clipped to is measured by the flow's tasks, part by part
    imag = random_array(rng, SHAPE, "float32") + 300
    x = (random_array(rng, SHAPE, "float32") + 1j * imag).astype(np.complex64)
    write_zarr(tmp_path / "in.zarr", x, (16, 16, 8))
    result = downsample_flow(
        f"{tmp_path}/in.zarr/raw",
        (2, 3, 2),
        f"{tmp_path}/out.zarr/s1",
        order=order,
        anti_aliasing=anti_aliasing,
        block_shape=(5, 7, 4),
        num_workers=2,
    )
    got = read(result)
    assert got.dtype == np.complex64
    for got_part, part in ((got.real, x.real), (got.imag, x.imag)):
        assert_matches_skimage(got_part, part, (2, 3, 2), order, anti_aliasing)
        if order == 1:
            expected = skimage_downsample(part, (2, 3, 2), order, anti_aliasing).astype(np.float32)
            np.testing.assert_array_equal(got_part, expected)


@pytest.mark.parametrize("output", ["out.zarr/s1", "out.n5/s1", "v2.zarr/s1"])
def test_every_output_kind(tmp_path, image, output):
    if output.startswith("v2"):
        zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    result = downsample_flow(image, 2, f"{tmp_path}/{output}", order=0)
    assert_matches_skimage(read(result), image, (2, 2, 2), 0, False)
    if output.startswith("v2"):
        assert zarr.open_array(str(tmp_path / "v2.zarr"), path="s1").metadata.zarr_format == 2


def test_numpy_in_numpy_out_2d(rng):
    x = random_array(rng, (257, 255), "float32")
    result = downsample_flow(x, (1, 2), order=3, anti_aliasing=True, block_shape=(64, 50))
    assert isinstance(result, np.ndarray)
    assert_matches_skimage(result, x, (1, 2), 3, True)


def test_workers_give_identical_output(tmp_path, image):
    one = downsample_flow(
        image, (3, 2, 1), order=1, anti_aliasing=True, block_shape=(4, 5, 6), num_workers=1
    )
    four = downsample_flow(
        image, (3, 2, 1), order=1, anti_aliasing=True, block_shape=(4, 5, 6), num_workers=4
    )
    np.testing.assert_array_equal(one, four)
    assert_matches_skimage(four, image, (3, 2, 1), 1, True)


def test_mask_writes_only_inside(tmp_path, rng, image):
    out_shape = reference_shape(SHAPE, (2, 2, 2))
    output = zarr.create_array(
        store=str(tmp_path / "out.zarr"),
        name="s1",
        shape=out_shape,
        dtype="uint16",
        chunks=(4, 4, 4),
        fill_value=0,
    )
    output[:] = 7
    mask = np.zeros(out_shape, bool)
    mask[2:9, 3:15, 1:7] = True  # partial chunks on every side, empty blocks elsewhere
    mask[rng.random(out_shape) < 0.05] = True
    downsample_flow(image, 2, output, order=1, mask=mask, block_shape=(8, 8, 8))
    expected = np.clip(np.rint(skimage_downsample(image, (2, 2, 2), 1, False)), 0, 65535)
    got = output[:]
    np.testing.assert_array_equal(got[mask], expected[mask])
    assert np.all(got[~mask] == 7)


def test_block_ids_write_only_those_blocks(tmp_path, image):
    output = f"{tmp_path}/out.zarr/s1"
    result = downsample_flow(image, 2, output, order=0, block_shape=(8, 8, 8), block_ids=[0, 5, 7])
    grid = BlockGrid(reference_shape(SHAPE, (2, 2, 2)), (8, 8, 8))
    expected = skimage_downsample(image, (2, 2, 2), 0, False).astype(image.dtype)
    written = np.zeros(grid.shape, bool)
    for block_id in (0, 5, 7):
        written[grid.block_slices(block_id)] = True
    got = result[:]
    np.testing.assert_array_equal(got[written], expected[written])
    assert np.all(got[~written] == 0)


def test_default_block_shape_respects_chunks_and_shards(tmp_path, image):
    out_shape = reference_shape(SHAPE, (1, 1, 1))
    sharded = zarr.create_array(
        store=str(tmp_path / "out.zarr"),
        name="copy",
        shape=out_shape,
        dtype="uint16",
        chunks=(4, 4, 4),
        shards=(8, 12, 8),
    )
    result = copy_flow(image, sharded)
    np.testing.assert_array_equal(result[:], image)
    sharded[:] = 0  # blocks of 8**3 across shards of (8, 12, 8): blocks sharing a shard run in turn
    np.testing.assert_array_equal(
        copy_flow(image, sharded, block_shape=(8, 8, 8), num_workers=4)[:], image
    )


def test_copy_between_formats_and_of_a_resized_source(tmp_path, image):
    n5 = copy_flow(image, f"{tmp_path}/a.n5/raw", block_shape=(16, 16, 16))
    back = copy_flow(f"{tmp_path}/a.n5/raw", f"{tmp_path}/b.zarr/raw")
    np.testing.assert_array_equal(back[:], image)
    resized = ResizedSource(
        as_source(n5), reference_shape(SHAPE, (2, 2, 2)), order=1, anti_aliasing=True
    )
    persisted = copy_flow(resized, f"{tmp_path}/b.zarr/s1", num_workers=2)
    assert_matches_skimage(persisted[:], image, (2, 2, 2), 1, True)


class FailingSource:
    """A source that raises for reads that start at chosen offsets: injected block failures."""

    def __init__(self, array: np.ndarray, failing_starts: set[tuple[int, ...]]):
        self.array, self.failing_starts, self.name = array, failing_starts, "failing"

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    write_unit = None

    def __getitem__(self, key):
        if tuple(k.start for k in key) in self.failing_starts:
            raise OSError("injected read failure")
        return self.array[key]


def test_failed_blocks_are_reported_and_rerun_with_block_ids(tmp_path, image):
    grid = BlockGrid(SHAPE, (8, 8, 8))
    bad = [3, 17, 40]
    source = FailingSource(image, {tuple(s.start for s in grid.block_slices(b)) for b in bad})
    output = f"{tmp_path}/out.zarr/copy"
    with pytest.raises(BlocksFailedError) as raised:
        copy_flow(source, output, block_shape=(8, 8, 8), num_workers=2)
    assert raised.value.failed_block_ids == bad
    assert f"block_ids={bad}" in str(raised.value)
    written = zarr.open_array(str(tmp_path / "out.zarr"), path="copy")[:]
    for block_id in range(grid.n_blocks):
        region = grid.block_slices(block_id)
        if block_id not in bad:
            np.testing.assert_array_equal(written[region], image[region])
    source.failing_starts.clear()
    copy_flow(source, output, block_shape=(8, 8, 8), block_ids=raised.value.failed_block_ids)
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "out.zarr"), path="copy")[:], image
    )


class FailingWrites:
    """A sink whose background writes fail for chosen blocks (the failure shows when the write is
    waited for, as a tensorstore write's does)."""

    def __init__(self, sink: ArraySource, failing_starts: set[tuple[int, ...]]):
        self.sink, self.failing_starts = sink, failing_starts

    def __getattr__(self, name):
        return getattr(self.sink, name)

    def start_write(self, key, values):
        finish = self.sink.start_write(key, values)
        if tuple(k.start for k in key) not in self.failing_starts:
            return finish

        def fail():
            finish()
            raise OSError("injected write failure")

        return fail


def test_a_failed_background_write_is_reported_and_not_recorded(tmp_path, image):
    grid = BlockGrid(SHAPE, (8, 8, 8))
    sink = ArraySource(
        zarr.create_array(
            store=str(tmp_path / "out.zarr"),
            name="copy",
            shape=SHAPE,
            dtype=image.dtype,
            chunks=(8, 8, 8),
        )
    )
    assert sink.fast_io is not None  # tensorstore writes run in the background
    records = BlockRecords(str(tmp_path / "records"))
    bad = [5, 6, grid.n_blocks - 1]  # two in a row, and the batch's last block
    failing = FailingWrites(sink, {tuple(s.start for s in grid.block_slices(b)) for b in bad})
    with pytest.raises(BlocksFailedError) as raised:
        process_batch(
            BlockJob(as_source(image), failing, grid, None, records), range(grid.n_blocks)
        )
    assert raised.value.failed_block_ids == bad
    assert "injected write failure" in str(raised.value)
    assert records.done() == set(range(grid.n_blocks)) - set(bad)


def test_failed_run_ends_in_failed_state(tmp_path, image):
    source = FailingSource(image, {(0, 0, 0)})
    state = copy_flow(source, f"{tmp_path}/out.zarr/copy", block_shape=(8, 8, 8), return_state=True)
    assert state.is_failed()
    assert "block_ids=[0]" in state.message or "block_ids=[0]" in str(
        state.result(raise_on_failure=False)
    )
