"""Microscopy vendor files (io/bioio_source.py) and folder conversion (convert.py): CZI files
written by pylibCZIrw read exactly against pylibCZIrw's own reads; the generic bioio path on an
OME-TIFF (bioio-ome-tiff) against tifffile; pyramids against tensorstore's downsample."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorstore as ts
import tifffile
import zarr

import bioimage_tasks as bt
from bioimage_tasks.errors import ParameterError
from bioimage_tasks.io import as_source, open_microscopy, physical_of
from bioimage_tasks.runners import RunnerConfig

pyczi = pytest.importorskip("pylibCZIrw.czi")
pytest.importorskip("bioio_ome_tiff")

ALL = (slice(None),) * 5


def write_czi(
    path,
    rng,
    channels=3,
    planes=4,
    shape=(40, 56),
    scenes=((0, 0), (300, 20)),
    names=("DAPI", "GFP", "RFP"),
    dtype=np.uint16,
) -> None:
    """A CZI of `len(scenes)` scenes (at those x, y stage positions), each `channels` x `planes`
    planes of random values, with scaling 0.25 x 0.25 x 1 micrometer and channel names."""
    high = np.iinfo(dtype).max
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for scene, location in enumerate(scenes):
            for c in range(channels):
                for z in range(planes):
                    plane = rng.integers(0, high, shape, dtype=dtype)
                    czi.write(
                        data=plane, plane={"C": c, "Z": z, "T": 0}, scene=scene, location=location
                    )
        czi.write_metadata(
            document_name="test",
            channel_names=dict(enumerate(names[:channels])),
            scale_x=0.25e-6,
            scale_y=0.25e-6,
            scale_z=1e-6,
        )


def czi_scene(path, scene, channels, planes) -> np.ndarray:
    """Scene `scene` as (c, z, y, x), read plane by plane by pylibCZIrw itself."""
    with pyczi.open_czi(str(path)) as czi:
        return np.stack(
            [
                np.stack(
                    [
                        czi.read(plane={"C": c, "Z": z, "T": 0}, scene=scene)[..., 0]
                        for z in range(planes)
                    ]
                )
                for c in range(channels)
            ]
        )


def test_czi_scenes_read_exactly_with_voxel_size_and_channel_names(tmp_path, rng):
    path = tmp_path / "cells.czi"
    write_czi(path, rng)
    for scene in (0, 1):
        expected = czi_scene(path, scene, 3, 4)
        source = as_source(f"{path}/{scene}" if scene else str(path))
        assert source.shape == (3, 4, 40, 56) and source.dtype == np.uint16
        np.testing.assert_array_equal(source[ALL[:4]], expected)
        for key in [
            (slice(1, 3), slice(0, 4, 3), slice(5, 33, 2), slice(7, 50)),
            (slice(2, 3), slice(1, 2), slice(0, 40, 7), slice(55, 56)),
        ]:
            np.testing.assert_array_equal(source[key], expected[key])
        # pickled for another process: reopens the file itself
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[ALL[:4]], expected)
    physical = physical_of(source)
    assert physical.axes == ("c", "z", "y", "x")
    assert physical.voxel_size == pytest.approx((1.0, 1.0, 0.25, 0.25))
    assert physical.units == (None, "micrometer", "micrometer", "micrometer")
    assert physical.channel_names == ("DAPI", "GFP", "RFP")
    # a singleton axis asked for is kept
    kept = open_microscopy(f"{path}/1", keep="t")
    assert kept.shape == (1, 3, 4, 40, 56) and physical_of(kept).axes == tuple("tczyx")
    np.testing.assert_array_equal(kept[ALL][0], czi_scene(path, 1, 3, 4))
    with pytest.raises(ParameterError, match="scene 2"):
        as_source(f"{path}/2")
    with pytest.raises(FileNotFoundError, match="missing.czi"):
        as_source(str(tmp_path / "missing.czi"))


def test_czi_pyramid_levels_exact_with_geometry_and_omero(tmp_path, rng):
    path = tmp_path / "cells.czi"
    write_czi(path, rng, planes=6, shape=(64, 72))
    base = czi_scene(path, 1, 3, 6)
    group = bt.pyramid(
        f"{path}/1", str(tmp_path / "cells.ome.zarr"), levels=3, chunks=(1, 2, 16, 16)
    )
    image = zarr.open_group(group, mode="r")
    attributes = image.attrs["ome"]
    datasets = attributes["multiscales"][0]["datasets"]
    factors = [(1, 1, 1, 1), (1, 1, 2, 2), (1, 1, 4, 4), (1, 2, 8, 8)]  # z 1 um, y x 0.25 um
    for level, factor in enumerate(factors):
        expected = ts.downsample(ts.array(base), list(factor), "mean").read().result()
        np.testing.assert_array_equal(image[f"s{level}"][:], expected)
        scale = datasets[level]["coordinateTransformations"][0]["scale"]
        assert scale == pytest.approx([1.0, factor[1] * 1.0, factor[2] * 0.25, factor[3] * 0.25])
    assert [a["name"] for a in attributes["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert [c["label"] for c in attributes["omero"]["channels"]] == ["DAPI", "GFP", "RFP"]
    from ome_zarr_models.v05.image import Image

    Image.from_zarr(zarr.open_group(group, mode="r"))  # valid NGFF 0.5


def write_mosaic(path, rng, channels=2, planes=5, tiles=(3, 2), tile=(128, 160)) -> np.ndarray:
    """A CZI of `tiles` (rows, columns) subblocks of `tile` per plane, as a stage writes a
    mosaic; returns its (c, z, y, x) values."""
    (rows, columns), (height, width) = tiles, tile
    data = rng.integers(0, 60000, (channels, planes, rows * height, columns * width), np.uint16)
    with pyczi.create_czi(str(path), exist_ok=True) as czi:
        for c in range(channels):
            for z in range(planes):
                for row in range(rows):
                    for column in range(columns):
                        part = data[c, z, row * height : (row + 1) * height]
                        czi.write(
                            data=part[:, column * width : (column + 1) * width],
                            plane={"C": c, "Z": z, "T": 0},
                            location=(column * width, row * height),
                        )
        czi.write_metadata(document_name="mosaic", scale_x=0.5e-6, scale_y=0.5e-6, scale_z=1e-6)
    return data


def test_czi_mosaic_reads_by_subblock_exactly_and_pyramid_decodes_each_once(tmp_path, rng):
    """The read unit is the mosaic's subblock; a block straddling subblocks reads what
    pylibCZIrw's own ROI read gives; a pyramid's default chunks are one channel x 4 planes,
    so its tiles cover whole subblocks: each (plane, subblock) is read once, levels exact."""
    path = tmp_path / "mosaic.czi"
    data = write_mosaic(path, rng)
    source = as_source(str(path))
    assert source.shape == (2, 5, 384, 320) and source.read_unit == (1, 1, 128, 160)
    assert source.preferred_chunks == (1, 4, 256, 256)
    key = (slice(1, 2), slice(2, 5), slice(100, 300), slice(150, 310))
    with pyczi.open_czi(str(path)) as czi:
        own = np.stack(
            [czi.read(roi=(150, 100, 160, 200), plane={"C": 1, "Z": z})[..., 0] for z in (2, 3, 4)]
        )
    np.testing.assert_array_equal(source[key][0], own)
    np.testing.assert_array_equal(own, data[key][0])
    # a 1.6 GB-like scene (the benchmark's): every tile is whole subblocks, and fits the budget
    big = dataclasses.replace(
        source, full_shape=(1, 3, 16, 4096, 4096), read_unit=(1, 1, 1024, 1024)
    )
    plan = bt.api.pyramid_operation(big, str(tmp_path / "big.ome.zarr"), levels=3).plan
    assert plan.tile[2:] == (1024, 1024) and math.prod(plan.tile) <= 2**23
    for region in range(plan.grid.n_blocks):
        for tile in plan.tiles(region):
            assert all(s.start % 1024 == 0 and s.stop % 1024 == 0 for s in tile[2:])
    # default chunks: one channel x 4 planes (cut to each level)
    layouts = bt.api.pyramid_operation(
        str(path), str(tmp_path / "p.ome.zarr"), levels=2
    ).spec.layouts
    assert [chunks for chunks, _ in layouts] == [(1, 4, 256, 256), (1, 4, 192, 160), (1, 3, 96, 80)]
    # tiles of one subblock (a small budget): each (plane, subblock) read once, counted
    # through pylibCZIrw itself, and every level exact
    reads = []
    read = pyczi.CziReader.read

    def counted(self, roi=None, plane=None, scene=None, **options):
        reads.append((tuple(roi), tuple(sorted(plane.items()))))
        return read(self, roi=roi, plane=plane, scene=scene, **options)

    pyczi.CziReader.read = counted
    try:
        group = bt.pyramid(
            str(path),
            str(tmp_path / "mosaic.ome.zarr"),
            levels=2,
            chunks=(1, 1, 128, 160),
            job_config=RunnerConfig(memory_budget=2**20),
        )
    finally:
        pyczi.CziReader.read = read
    assert len(reads) == len(set(reads)) == 2 * 5 * 6
    assert all(x % 160 == 0 and y % 128 == 0 and (w, h) == (160, 128) for (x, y, w, h), _ in reads)
    image = zarr.open_group(group, mode="r")
    datasets = image.attrs["ome"]["multiscales"][0]["datasets"]
    assert len(datasets) == 3
    for level, dataset in enumerate(datasets):
        scale = dataset["coordinateTransformations"][0]["scale"]
        factor = [1, round(scale[1]), round(scale[2] / 0.5), round(scale[3] / 0.5)]
        expected = ts.downsample(ts.array(data), factor, "mean").read().result()
        np.testing.assert_array_equal(image[f"s{level}"][:], expected)


def write_ome_tiff(path, rng) -> np.ndarray:
    data = rng.integers(0, 4000, (1, 2, 5, 48, 40), dtype=np.uint16)
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={
            "axes": "TCZYX",
            "PhysicalSizeX": 0.5,
            "PhysicalSizeY": 0.5,
            "PhysicalSizeZ": 2.0,
            "Channel": {"Name": ["nuclei", "membrane"]},
        },
    )
    return data


def test_bioio_plugin_path_on_an_ome_tiff(tmp_path, rng):
    """ND2 and LIF go through this path (bioio's plugin, its lazy dask array cut per block); an
    OME-TIFF forced through it (bioio-ome-tiff) stands in, as neither can be written here."""
    path = str(tmp_path / "stack.ome.tif")
    data = write_ome_tiff(path, rng)[0]
    source = open_microscopy(path, reader="bioio")
    assert source.reader == "bioio_ome_tiff" and source.shape == (2, 5, 48, 40)
    np.testing.assert_array_equal(source[ALL[:4]], data)
    key = (slice(1, 2), slice(1, 5, 2), slice(3, 47, 5), slice(0, 39))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[key], data[key])
    physical = physical_of(source)
    assert physical.voxel_size == pytest.approx((1.0, 2.0, 0.5, 0.5))
    assert physical.channel_names == ("nuclei", "membrane")
    # our own TIFF reader still takes the plain path
    assert type(as_source(path)).__name__ == "TiffSource"
    group = bt.pyramid(source, str(tmp_path / "stack.ome.zarr"), scale_factors=[(1, 1, 2, 2)])
    level = zarr.open_group(group, mode="r")["s1"][:]
    np.testing.assert_array_equal(
        level, ts.downsample(ts.array(data), [1, 1, 2, 2], "mean").read().result()
    )
    with pytest.raises(ParameterError, match="no installed bioio plugin"):
        open_microscopy(
            str(tmp_path / "notes.xyz" if (tmp_path / "notes.xyz").write_text("x") else "")
        )


def level_expected(path, factor, scene=0, channels=3, planes=4) -> np.ndarray:
    base = czi_scene(path, scene, channels, planes)
    return ts.downsample(ts.array(base), list(factor), "mean").read().result()


def records(output_dir) -> dict[str, dict]:
    folder = os.path.join(output_dir, ".bioimage-tasks", "convert")
    return {
        f.removesuffix(".json"): json.load(open(os.path.join(folder, f)))
        for f in os.listdir(folder)
        if f.endswith(".json")
    }


def record_writers(output_dir) -> set[int]:
    """The processes that wrote the block records of the images in `output_dir`."""
    logs = glob.glob(f"{output_dir}/*.ome.zarr/.bioimage-tasks/blocks/*/*/*.log")
    return {int(os.path.basename(log).rsplit("-", 2)[1]) for log in logs}


def test_convert_folder_reports_a_bad_file_skips_done_ones_and_redoes_a_changed_one(tmp_path, rng):
    folder, out = tmp_path / "in", str(tmp_path / "out")
    folder.mkdir()
    write_czi(folder / "a.czi", rng, scenes=((0, 0),))
    write_czi(folder / "b.czi", rng, scenes=((0, 0),), channels=2)
    (folder / "broken.czi").write_bytes(b"not a czi file at all")
    planned = bt.convert(f"{folder}/*.czi", out, levels=1, dry_run=True)
    assert [f.outcome for f in planned.files] == ["would convert", "would convert", "failed"]
    assert not os.path.exists(out)  # a dry run writes nothing
    report = bt.convert(f"{folder}/*.czi", out, levels=1)
    outcomes = {f.name: f for f in report.files}
    assert [outcomes[n].outcome for n in ("a", "b", "broken")] == [
        "converted",
        "converted",
        "failed",
    ]
    assert (
        "broken.czi" in outcomes["broken"].reason
        and "not a readable CZI" in outcomes["broken"].reason
    )
    assert not report.ok and outcomes["a"].bytes > 0
    for name, channels in (("a", 3), ("b", 2)):
        image = zarr.open_group(f"{out}/{name}.ome.zarr", mode="r")
        np.testing.assert_array_equal(
            image["s1"][:], level_expected(folder / f"{name}.czi", (1, 1, 2, 2), channels=channels)
        )
    s0_chunks = f"{out}/a.ome.zarr/s0/c/0/0/0/0"
    written = os.stat(s0_chunks).st_mtime_ns
    again = {f.name: f.outcome for f in bt.convert(f"{folder}/*.czi", out, levels=1).files}
    assert again == {"a": "skipped", "b": "skipped", "broken": "failed"}
    assert os.stat(s0_chunks).st_mtime_ns == written
    write_czi(folder / "b.czi", rng, scenes=((0, 0),), channels=2)  # rewritten with new values
    again = {f.name: f.outcome for f in bt.convert(f"{folder}/*.czi", out, levels=1).files}
    assert again == {"a": "skipped", "b": "redone", "broken": "failed"}
    np.testing.assert_array_equal(
        zarr.open_group(f"{out}/b.ome.zarr", mode="r")["s1"][:],
        level_expected(folder / "b.czi", (1, 1, 2, 2), channels=2),
    )
    assert records(out)["b"]["outcome"] == "redone"
    with pytest.raises(ParameterError, match="levels"):
        bt.convert(f"{folder}/*.czi", str(tmp_path / "other"))
    with pytest.raises(ParameterError, match="matches no file"):
        bt.convert(f"{folder}/*.nd2", str(tmp_path / "other"), levels=1)
    assert not os.path.exists(tmp_path / "other")


def test_convert_runs_small_files_in_worker_processes_exactly(tmp_path, rng, caplog):
    folder, out = tmp_path / "in", str(tmp_path / "out")
    folder.mkdir()
    stacks = {f"s{i}": rng.integers(0, 60000, (8, 24, 40), dtype=np.uint16) for i in range(6)}
    for name, stack in stacks.items():
        tifffile.imwrite(folder / f"{name}.ome.tif", stack, metadata={"axes": "ZYX"})
    (folder / "s3x.ome.tif").write_bytes(b"not a tiff")
    with caplog.at_level("INFO", logger="bioimage_tasks.convert"):
        report = bt.convert(f"{folder}/*.ome.tif", out, levels=2, num_workers=2)
    assert [f.name for f in report.files] == ["s0", "s1", "s2", "s3", "s3x", "s4", "s5"]
    assert [f.outcome for f in report.files] == ["converted"] * 4 + ["failed"] + ["converted"] * 2
    assert "s3x.ome.tif" in report.files[4].reason
    # small files ran in worker processes (a forkserver's: this process runs threads), each
    # outcome logged here as it came
    logged = [r.getMessage().split()[:2] for r in caplog.records if r.process == os.getpid()]
    assert sorted(logged) == [["convert", f"{f.name}:"] for f in report.files]
    assert os.getpid() not in record_writers(out) != set()
    for name, stack in stacks.items():
        image = zarr.open_group(f"{out}/{name}.ome.zarr", mode="r")
        np.testing.assert_array_equal(image["s0"][:], stack)
        for level, factor in ((1, 2), (2, 4)):
            expected = ts.downsample(ts.array(stack), [factor] * 3, "mean").read().result()
            np.testing.assert_array_equal(image[f"s{level}"][:], expected)
        assert records(out)[name]["outcome"] == "converted"
    again = bt.convert(f"{folder}/*.ome.tif", out, levels=2, num_workers=2)
    assert [f.outcome for f in again.files] == ["skipped"] * 4 + ["failed"] + ["skipped"] * 2


def cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "bioimage_tasks.cli", "convert", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_convert_cli_killed_then_rerun_finishes_what_is_missing(tmp_path, rng):
    folder, out = tmp_path / "in", str(tmp_path / "out")
    folder.mkdir()
    for name in ("f1", "f2", "f3"):
        write_czi(
            folder / f"{name}.czi", rng, channels=1, planes=16, shape=(512, 512), scenes=((0, 0),)
        )
    arguments = (f"{folder}/*.czi", out, "--levels", "2", "--chunks", "1,64,64")
    dry = cli(*arguments, "--dry-run")
    listing, _ = dry.communicate(timeout=120)
    assert dry.returncode == 0 and listing.count("would convert") == 3 and not os.path.exists(out)
    process = cli(*arguments)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        done = os.path.exists(out) and records(out).get("f1", {}).get("outcome") == "converted"
        if done:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = records(out)
    assert before["f1"]["outcome"] == "converted"
    assert any(r.get("outcome") == "running" for r in before.values()) or len(before) < 3
    rerun = cli(*arguments)
    summary, errors = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, errors
    lines = {line.split()[0]: line.split()[1] for line in summary.splitlines()[1:-1]}
    assert lines["f1"] == "skipped" and {lines["f2"], lines["f3"]} <= {"resumed", "converted"}
    assert "3 of 3 files ok" in summary
    for name in ("f1", "f2", "f3"):
        image = zarr.open_group(f"{out}/{name}.ome.zarr", mode="r")
        for level, factor in ((1, (1, 1, 2, 2)), (2, (1, 1, 4, 4))):
            np.testing.assert_array_equal(
                image[f"s{level}"][:],
                level_expected(folder / f"{name}.czi", factor, channels=1, planes=16)[0],
            )
    (folder / "zz_bad.czi").write_text("broken")
    failing = cli(*arguments)
    summary, _ = failing.communicate(timeout=300)
    assert failing.returncode == 1 and "zz_bad" in summary and "failed" in summary


def test_convert_flow_runs_each_file_as_a_child_flow_run(prefect_server, tmp_path, rng):
    import asyncio

    from prefect.client.orchestration import get_client

    from bioimage_tasks.convert import ConvertFailedError
    from flows import convert_flow

    folder, out = tmp_path / "in", str(tmp_path / "out")
    folder.mkdir()
    write_czi(folder / "good.czi", rng, scenes=((0, 0),))
    (folder / "junk.czi").write_text("junk")
    with pytest.raises(ConvertFailedError, match="junk") as failed:
        convert_flow(f"{folder}/*.czi", out, levels=1)
    assert {f.name: f.outcome for f in failed.value.report.files} == {
        "good": "converted",
        "junk": "failed",
    }
    np.testing.assert_array_equal(
        zarr.open_group(f"{out}/good.ome.zarr", mode="r")["s1"][:],
        level_expected(folder / "good.czi", (1, 1, 2, 2)),
    )

    async def child_runs() -> list[str]:
        async with get_client() as client:
            runs = await client.read_flow_runs()
        return [r.name for r in runs if r.parent_task_run_id is not None]

    names = asyncio.run(child_runs())
    assert any("good.czi" in name for name in names), names


def test_rgb_czi_samples_become_channels_in_rgb_order(tmp_path, rng):
    """pylibCZIrw writes and reads Bgr24 planes as (y, x, [b, g, r]); the source shows c = r, g,
    b."""
    planes = [rng.integers(0, 255, (30, 40, 3), dtype=np.uint8) for _ in range(2)]
    with pyczi.create_czi(str(tmp_path / "rgb.czi")) as czi:
        for z, plane in enumerate(planes):
            czi.write(data=plane, plane={"C": 0, "Z": z, "T": 0})
    source = as_source(str(tmp_path / "rgb.czi"))
    expected = np.moveaxis(np.stack(planes)[..., ::-1], -1, 0)  # (c, z, y, x), c = r, g, b
    assert source.shape == (3, 2, 30, 40) and physical_of(source).axes == ("c", "z", "y", "x")
    assert source.read_unit == (3, 1, 30, 40)  # tiles hold all samples: a plane is read once
    np.testing.assert_array_equal(source[ALL[:4]], expected)
    key = (slice(1, 3), slice(1, 2), slice(3, 20, 2), slice(5, 9))
    np.testing.assert_array_equal(source[key], expected[key])
