"""TIFF and OME-TIFF inputs (tifffile's zarr store): every kind of file reads exactly what
tifffile.imread reads; flows decode each strip or tile once (counted on tifffile's store); OME
physical sizes reach the pyramid; resume sees a rewritten file; a Dask cluster reads it too."""

from __future__ import annotations

import hashlib
import os
import pickle
import time

import numpy as np
import pytest
import tensorstore as ts
import tifffile
import zarr
from helpers import executed_since
from ngff import validate_ngff

from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io import as_source, tiff_headers
from bioimage_tasks.io.tiff_headers import header_key
from bioimage_tasks.runners import LocalClusterConfig
from flows import copy_flow, downsample_flow, pyramid_flow

SHAPE = (
    20,
    200,
    150,
)  # tiles of 64 leave partial edge tiles; strips of 16 rows a partial last strip


@pytest.fixture
def image(rng) -> np.ndarray:
    return rng.integers(0, 255, SHAPE, dtype=np.uint8)


def write_ome(path, data, **options) -> str:
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0},
        **options,
    )
    return str(path)


@pytest.fixture
def decodes(monkeypatch) -> list[tuple[str, int, str]]:
    """Every strip or tile tifffile decodes in this process, as (file, segment index in its page,
    hash of its bytes: random data makes every segment's unique), whoever reads it (our segment
    reader or tifffile's zarr store: both call the key frame's `decode`)."""
    seen: list[tuple[str, int, str]] = []
    original = tifffile.TiffPage.__dict__["decode"].func

    def counting(page):
        decode = original(page)

        def wrapper(data, index, **options):
            seen.append(
                (
                    page.parent.filehandle.path,
                    index,
                    hashlib.blake2b(data, digest_size=8).hexdigest(),
                )
            )
            return decode(data, index, **options)

        return wrapper

    monkeypatch.setattr(tifffile.TiffPage, "decode", property(counting))
    return seen


def tile_count(shape, tile) -> int:
    return shape[0] * -(-shape[1] // tile[0]) * -(-shape[2] // tile[1])


KINDS = {
    "tiled bigtiff ome zlib": lambda p, x: write_ome(
        p / "a.ome.tif", x, tile=(64, 64), bigtiff=True, compression="zlib"
    ),
    "striped": lambda p, x: (tifffile.imwrite(p / "a.tif", x, rowsperstrip=16), str(p / "a.tif"))[
        1
    ],
    "striped lzw .tiff": lambda p, x: (
        tifffile.imwrite(p / "a.tiff", x, rowsperstrip=7, compression="lzw"),
        str(p / "a.tiff"),
    )[1],
    "imagej": lambda p, x: (tifffile.imwrite(p / "a.tif", x, imagej=True), str(p / "a.tif"))[1],
}


@pytest.mark.parametrize("kind", KINDS)
def test_tiff_kinds_read_what_tifffile_reads(tmp_path, image, kind):
    source = as_source(KINDS[kind](tmp_path, image))
    reference = tifffile.imread(source.files[0])
    assert source.shape == reference.shape == SHAPE and source.dtype == np.uint8
    key = (slice(3, 17), slice(10, 190), slice(5, 150, 2))
    np.testing.assert_array_equal(source[key], reference[key])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[key], reference[key])


def test_the_opening_process_reads_what_open_tiff_parsed(tmp_path, image, rng):
    """A source reads, in the process that opened it, through the series `open_tiff` parsed (no
    second parse: the file moved away meanwhile, it still reads its segments); its read unit is
    the chunks of tifffile's own zarr store for every layout (RGB samples: read through it)."""
    rgb = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    layouts = {
        **KINDS,
        "rgb": lambda p, x: (tifffile.imwrite(p / "a.tif", rgb), str(p / "a.tif"))[1],
    }
    for kind, write in layouts.items():
        (tmp_path / kind).mkdir()
        path = write(tmp_path / kind, image)
        source = as_source(path)
        store = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        assert source.read_unit == tuple(store.chunks), kind
        if kind == "rgb":  # samples are read through tifffile's store, which opens files by name
            continue
        expected = tifffile.imread(path)
        os.rename(path, f"{path}.moved")
        key = tuple(slice(1, n - 1) for n in source.shape)
        np.testing.assert_array_equal(source[key], expected[key], err_msg=kind)
        with pytest.raises(FileNotFoundError):  # a copy elsewhere opens the file by its name
            pickle.loads(pickle.dumps(source))[key]


def test_2d_predictor_jpeg_big_endian_and_rgb_files(tmp_path, rng):
    """Codecs and layouts: the segment reader (predictor, JPEG tables, big-endian LZW strips) and
    tifffile's zarr store for RGB samples read what tifffile.imread reads."""
    files = {
        "plane.tif": (
            rng.integers(0, 60000, (130, 97), dtype=np.uint16),
            {"tile": (32, 32), "compression": "zlib", "predictor": True},
        ),
        "jpeg.tif": (
            rng.integers(0, 255, (6, 100, 90), dtype=np.uint8),
            {"tile": (32, 32), "compression": "jpeg"},
        ),
        "be.tif": (
            rng.integers(0, 2**31, (5, 70, 50), dtype=np.uint32),
            {"byteorder": ">", "rowsperstrip": 9, "compression": "lzw"},
        ),
        "rgb.tif": (
            rng.integers(0, 255, (4, 30, 40, 3), dtype=np.uint8),
            {"photometric": "rgb", "tile": (16, 16)},
        ),
    }
    for name, (data, options) in files.items():
        tifffile.imwrite(tmp_path / name, data, **options)
        source = as_source(str(tmp_path / name))
        key = ((slice(1, None, 2),) + (slice(3, None),) * 2)[: min(data.ndim, 3)] + (
            slice(None),
        ) * (data.ndim - 3)
        np.testing.assert_array_equal(
            source[key], tifffile.imread(tmp_path / name)[key], err_msg=name
        )


@pytest.mark.parametrize("form", ["folder", "glob"])
def test_slice_folder_and_glob_are_one_3d_source(tmp_path, image, form):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(SHAPE[0]):  # natural order: z2 before z10
        tifffile.imwrite(folder / f"z{z}.tif", image[z], tile=(64, 64))
    (folder / "notes.txt").write_text("not a slice")
    source = as_source(str(folder) if form == "folder" else f"{folder}/z*.tif")
    assert source.shape == SHAPE and source.read_unit == (1, 64, 64)
    np.testing.assert_array_equal(
        source[(slice(1, 19, 3), slice(0, 200), slice(7, 99))], image[1:19:3, :, 7:99]
    )


def write_slices(folder, image, **options) -> None:
    folder.mkdir()
    for z in range(len(image)):
        tifffile.imwrite(folder / f"z{z}.tif", image[z], **options)


NOT_A_TIFF = r"is not a readable TIFF file \(TiffFileError: .*\)"
BAD_SLICES = {  # name: (write the odd slice z7 over a folder of good ones, what the error says)
    "shape": (lambda path, x: tifffile.imwrite(path, x[7, :100]), r"holds \(100, 150\) uint8"),
    "dtype": (
        lambda path, x: tifffile.imwrite(path, x[7].astype(np.uint16)),
        r"holds \(200, 150\) uint16",
    ),
    "stack": (lambda path, x: tifffile.imwrite(path, x[:2]), r"holds \(2, 200, 150\) uint8"),
    "not a tiff": (lambda path, x: path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100)), NOT_A_TIFF),
    "truncated": (lambda path, x: path.write_bytes(b"II*\x00\x08\x00\x00\x00\x0e"), NOT_A_TIFF),
}


@pytest.mark.parametrize("fault", BAD_SLICES)
def test_a_bad_slice_is_refused_when_the_input_is_opened(tmp_path, image, fault):
    folder = tmp_path / "slices"
    write_slices(folder, image)
    write, pattern = BAD_SLICES[fault]
    write(folder / "z7.tif", image)
    for text in (str(folder), f"{folder}/z*.tif"):
        first = rf"the first slice '{folder}/z0.tif' holds \(200, 150\) uint8"
        bad = rf"input: slice '{folder}/z7.tif' {pattern}"
        with pytest.raises(ParameterError, match=rf"{bad}; {first}"):
            as_source(text)


@pytest.mark.usefixtures("prefect_server")
def test_a_bad_slice_fails_a_flow_before_its_output_exists(tmp_path, image):
    folder = tmp_path / "slices"
    write_slices(folder, image, tile=(64, 64))
    tifffile.imwrite(folder / "z12.tif", image[12].astype(np.float32))
    with pytest.raises(ParameterError, match=r"slice '.*z12.tif' holds \(200, 150\) float32"):
        downsample_flow(
            str(folder), 2, f"{tmp_path}/out.zarr/s1", method="mean", block_shape=(4, 64, 64)
        )
    assert not os.path.exists(tmp_path / "out.zarr")


def test_slices_that_differ_only_in_layout_are_accepted_from_headers(tmp_path, image, monkeypatch):
    """Slices of one shape and dtype pass however they are stored; files whose first IFD reads
    like the first file's are not opened by tifffile (headers only), the others are, to check."""
    folder = tmp_path / "slices"
    write_slices(folder, image)
    tifffile.imwrite(folder / "z3.tif", image[3], tile=(64, 64), compression="zlib")
    tifffile.imwrite(folder / "z5.tif", image[5], imagej=True)
    tifffile.imwrite(folder / "z9.tif", image[9], bigtiff=True, byteorder=">")
    opened = []
    original = tifffile.TiffFile.__init__

    def opening(self, path, *args, **kwargs):
        opened.append(os.path.basename(str(path)))
        original(self, path, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffFile, "__init__", opening)
    source = as_source(str(folder))
    assert sorted(set(opened)) == ["z0.tif", "z3.tif", "z5.tif"]  # z9: BigTIFF, same tags
    np.testing.assert_array_equal(source[(slice(None),) * 3], image)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"bigtiff": True},
        {"byteorder": ">"},
        {"imagej": True},
        {"tile": (64, 64), "description": "x" * 5000},
    ],
)
def test_header_key_reads_what_tifffile_reads(tmp_path, image, monkeypatch, options):
    """The header reader agrees with tifffile's first page, also when every value must be read
    from further in the file (a head of 8 bytes: as for writers that put the IFD at the end)."""
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image[0].astype(np.int16), **options)
    key = header_key(str(path))
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        expected = (
            tuple(sorted(page.tags.keys())),
            (page.imagewidth,),
            (page.imagelength,),
            (page.samplesperpixel,),
            (page.bitspersample,),
            (page.sampleformat,),
            len(tif.pages) > 1,
        )
    assert (tuple(sorted(set(key.tag_codes))), *key[1:7]) == expected and key.sample_format == (2,)
    monkeypatch.setattr(tiff_headers, "HEAD_BYTES", 8)
    assert header_key(str(path)) == key


def test_series_choice_and_clear_errors(tmp_path, image):
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image)
        tif.write(image[:, :50, :60] + 1)
    np.testing.assert_array_equal(as_source(str(path))[(slice(None),) * 3], image)
    second = as_source(f"{path}/1")
    assert second.shape == (SHAPE[0], 50, 60)
    np.testing.assert_array_equal(second[(slice(None),) * 3], image[:, :50, :60] + 1)
    with pytest.raises(ValueError, match="has 2 series"):
        as_source(f"{path}/2")
    with pytest.raises(FileNotFoundError, match="no TIFF file"):
        as_source(str(tmp_path / "missing.tif"))
    with pytest.raises(FileNotFoundError, match="no TIFF file matches"):
        as_source(f"{tmp_path}/none*.tif")
    tifffile.imwrite(tmp_path / "cube1.tif", image)
    tifffile.imwrite(tmp_path / "cube2.tif", image)
    with pytest.raises(ValueError, match="2-D files"):
        as_source(f"{tmp_path}/cube*.tif")


def test_ome_physical_sizes(tmp_path, image):
    physical = as_source(KINDS["tiled bigtiff ome zlib"](tmp_path, image)).physical
    assert physical.voxel_size == (2.0, 0.5, 0.5)
    assert physical.units == ("micrometer",) * 3 and physical.axes == ("z", "y", "x")
    tifffile.imwrite(
        tmp_path / "ij.tif",
        image,
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"spacing": 3.0, "unit": "um", "axes": "ZYX"},
    )
    assert as_source(str(tmp_path / "ij.tif")).physical.voxel_size == (3.0, 0.25, 0.25)


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("layout", ["tiles", "strips"])
def test_copy_decodes_each_strip_or_tile_once(tmp_path, image, decodes, layout):
    options = {"tile": (64, 64), "bigtiff": True} if layout == "tiles" else {"rowsperstrip": 16}
    path = write_ome(tmp_path / "in.ome.tif", image, compression="zlib", **options)
    result = copy_flow(path, f"{tmp_path}/out.zarr/raw", num_workers=2)
    expected = tile_count(SHAPE, (64, 64)) if layout == "tiles" else SHAPE[0] * -(-SHAPE[1] // 16)
    assert len(decodes) == len(set(decodes)) == expected
    np.testing.assert_array_equal(
        result[:], tifffile.imread(path)
    )  # (decodes every segment once more)


@pytest.mark.usefixtures("prefect_server")
def test_downsample_of_strips_decodes_each_once(tmp_path, image, decodes):
    path = write_ome(tmp_path / "in.ome.tif", image, rowsperstrip=10)
    result = downsample_flow(path, 2, f"{tmp_path}/out.zarr/s1", method="mean", num_workers=2)
    expected = ts.downsample(ts.array(tifffile.imread(path)), [2, 2, 2], "mean").read().result()
    np.testing.assert_array_equal(result[:], expected)
    assert len(decodes) == len(set(decodes)) == SHAPE[0] * SHAPE[1] // 10


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("layout", ["tiles", "strips"])
def test_pyramid_from_ome_tiff_takes_its_voxel_size_and_decodes_once(
    tmp_path, rng, decodes, layout
):
    shape = (40, 300, 260)
    data = rng.integers(0, 60000, shape, dtype=np.uint16)
    options = {"tile": (64, 64)} if layout == "tiles" else {"rowsperstrip": 24}
    path = write_ome(tmp_path / "in.ome.tif", data, bigtiff=True, compression="zlib", **options)
    group_path = f"{tmp_path}/out.ome.zarr"
    pyramid_flow(path, group_path, levels=3, method="mean", chunks=(32, 32, 32), num_workers=2)
    expected = tile_count(shape, (64, 64)) if layout == "tiles" else shape[0] * -(-shape[1] // 24)
    assert len(decodes) == len(set(decodes)) == expected
    group = zarr.open_group(group_path, mode="r")
    multiscale = group.attrs["ome"]["multiscales"][0]
    assert [a.get("unit") for a in multiscale["axes"]] == ["micrometer"] * 3
    factors = [(1, 2, 2), (1, 4, 4), (2, 8, 8)]  # z is 4x coarser: (1,2,2) until isotropic, then 2
    for level, factor in enumerate(factors, start=1):
        scale = multiscale["datasets"][level]["coordinateTransformations"][0]["scale"]
        assert scale == [2.0 * factor[0], 0.5 * factor[1], 0.5 * factor[2]]
        reference = ts.downsample(ts.array(data), list(factor), "mean").read().result()
        np.testing.assert_array_equal(group[f"s{level}"][:], reference)
    np.testing.assert_array_equal(group["s0"][:], data)


@pytest.mark.usefixtures("prefect_server")
def test_pyramid_of_a_czyx_ome_tiff_keeps_its_channels(tmp_path, rng):
    """The OME-TIFF names its axes, so levels= plans from its space axes alone."""
    data = rng.integers(0, 255, (2, 8, 48, 40), dtype=np.uint8)
    path = str(tmp_path / "cells.ome.tif")
    sizes = {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 1.0}
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "CZYX", **sizes})
    pyramid_flow(path, f"{tmp_path}/out.ome.zarr", levels=2)
    validate_ngff(f"{tmp_path}/out.ome.zarr")
    group = zarr.open_group(f"{tmp_path}/out.ome.zarr", mode="r")
    multiscale = group.attrs["ome"]["multiscales"][0]
    axes = [(a["name"], a["type"]) for a in multiscale["axes"]]
    assert axes == [("c", "channel"), ("z", "space"), ("y", "space"), ("x", "space")]
    for level, factors in enumerate([(1, 1, 2, 2), (1, 2, 4, 4)], start=1):
        assert multiscale["datasets"][level]["coordinateTransformations"][0]["scale"] == [
            1.0,
            1.0 * factors[1],
            0.5 * factors[2],
            0.5 * factors[3],
        ]
        reference = ts.downsample(ts.array(data), list(factors), "mean").read().result()
        np.testing.assert_array_equal(group[f"s{level}"][:], reference)


@pytest.mark.usefixtures("prefect_server")
def test_rerun_writes_nothing_and_a_rewritten_tiff_is_recomputed(tmp_path, image):
    path = write_ome(tmp_path / "in.ome.tif", image, tile=(64, 64))
    output = f"{tmp_path}/out.zarr/raw"
    copy_flow(path, output, block_shape=(8, 64, 64))
    started = time.time()
    copy_flow(path, output, block_shape=(8, 64, 64))
    assert executed_since(output, started) == set()
    changed = image[::-1].copy()
    time.sleep(0.01)
    write_ome(tmp_path / "in.ome.tif", changed, tile=(64, 64))
    started = time.time()
    result = copy_flow(path, output, block_shape=(8, 64, 64))
    assert len(executed_since(output, started)) == 3 * 4 * 3
    np.testing.assert_array_equal(result[:], changed)


def test_tiff_is_not_an_output(tmp_path, image):
    with pytest.raises(ValueError, match="TIFF is an input format"):
        copy_flow(image, str(tmp_path / "out.tif"))
    assert not os.path.exists(tmp_path / "out.tif")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_tiff_input_on_a_dask_cluster(tmp_path, image):
    path = write_ome(tmp_path / "in.ome.tif", image, tile=(64, 64), compression="zlib")
    result = downsample_flow(
        path,
        2,
        f"{tmp_path}/out.zarr/s1",
        method="mode",
        job_type="subprocess",
        num_workers=2,
        job_config=LocalClusterConfig(worker_timeout=120),
    )
    np.testing.assert_array_equal(
        result[:], ts.downsample(ts.array(image), [2, 2, 2], "mode").read().result()
    )
