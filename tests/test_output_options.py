"""`OutputOptions` on the real Prefect engine and real files: codecs and levels for zarr v3, zarr
v2 and n5 outputs (metadata read back with zarr-python and tensorstore), shards for
downsample_flow and copy_flow (also within a small memory budget), `write_empty_chunks` on both
I/O paths, refusals before any work, JSON parameters (deployments) and the command line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorstore as ts
import zarr
from reference import assert_matches_skimage, random_array
from test_cli import cli

from bioimage_tasks import OutputOptions, RunnerConfig, as_source
from bioimage_tasks.io.options import stored_codec
from bioimage_tasks.planning import plan_blockwise
from bioimage_tasks.resampling import ResizedSource
from flows import copy_flow, downsample_flow, pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

SHAPE = (37, 41, 23)
FORMATS = {"zarr v3": "out.zarr/x", "zarr v2": "v2.zarr/x", "n5": "out.n5/x"}


@pytest.fixture
def image(rng) -> np.ndarray:
    return random_array(rng, SHAPE, "uint16")


def output_path(tmp_path, kind: str) -> str:
    if kind == "zarr v2":
        zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    return f"{tmp_path}/{FORMATS[kind]}"


def ts_open(path: str) -> ts.TensorStore:
    container, key = path.rsplit("/", 1)
    if container.endswith(".n5"):
        return ts.open(
            {"driver": "n5", "kvstore": {"driver": "file", "path": container}, "path": key}
        ).result()
    driver = "zarr" if os.path.exists(os.path.join(path, ".zarray")) else "zarr3"
    return ts.open({"driver": driver, "kvstore": {"driver": "file", "path": path}}).result()


def zarr_codec(path: str) -> tuple[str, int]:
    """(codec, level) as zarr-python reads them: its codec objects, not our metadata parser."""
    container, key = path.rsplit("/", 1)
    (compressor,) = zarr.open_array(container, path=key, mode="r").compressors
    name = {
        "ZstdCodec": "zstd",
        "Zstd": "zstd",
        "GzipCodec": "gzip",
        "GZip": "gzip",
        "BloscCodec": "blosc",
        "Blosc": "blosc",
    }[type(compressor).__name__]
    if name == "blosc":
        shuffle = compressor.shuffle
        assert str(getattr(shuffle, "value", shuffle)) in ("shuffle", "1"), compressor
        cname = compressor.cname
        return f"blosc-{getattr(cname, 'value', cname)}", compressor.clevel
    return name, compressor.level


def chunk_files(directory: str) -> set[str]:
    """The array's chunk (or shard) files, relative to its folder; metadata and records excluded."""
    return {
        os.path.relpath(os.path.join(root, name), directory)
        for root, dirs, names in os.walk(directory)
        for name in names
        if ".bioimage-tasks" not in root
        and name not in ("zarr.json", ".zarray", ".zattrs", "attributes.json")
    }


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize(
    "codec, level", [("zstd", 7), ("blosc-lz4", None), ("gzip", 2), (None, None)]
)
def test_every_codec_round_trips_and_is_named_in_the_metadata(tmp_path, image, kind, codec, level):
    path = output_path(tmp_path, kind)
    options = None if codec is None else OutputOptions(codec=codec, level=level)
    result = copy_flow(image, path, output_options=options)
    np.testing.assert_array_equal(ts_open(path).read().result(), image)
    expected_level = {None: None, "zstd": 7, "blosc-lz4": 5, "gzip": 2}[codec]
    metadata = ts_open(path).spec().to_json()["metadata"]
    if kind == "n5":
        compression = json.load(open(os.path.join(path, "attributes.json")))["compression"]
        assert compression == metadata["compression"]
        expected = {
            None: {"type": "gzip"},
            "zstd": {"type": "zstd", "level": 7},
            "gzip": {"type": "gzip", "level": 2},
            "blosc-lz4": {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
        }[codec]
        assert expected.items() <= compression.items(), compression
        assert stored_codec(metadata)[0] == (codec or "gzip")
        return
    np.testing.assert_array_equal(result[...], image)
    default = ("zstd", 0)  # zarr's own default, what outputs got before options existed
    assert zarr_codec(path) == ((codec, expected_level) if codec else default)
    assert stored_codec(metadata) == (
        (codec, expected_level) if codec else default
    )  # tensorstore's view
    if codec == "blosc-lz4":  # blosc with lz4 and byte shuffle in tensorstore's own words too
        codecs = (
            metadata["codecs"][-1]["configuration"] if kind == "zarr v3" else metadata["compressor"]
        )
        assert codecs["cname"] == "lz4" and codecs["shuffle"] in ("shuffle", 1)


@pytest.mark.parametrize("flow", ["downsample", "copy"])
def test_shards_are_in_the_metadata_and_blocks_own_them(tmp_path, image, flow):
    path, shards = f"{tmp_path}/out.zarr/x", (16, 16, 8)
    options = OutputOptions(codec="zstd", shards=shards)
    if flow == "downsample":
        result = downsample_flow(
            image, 2, path, order=1, anti_aliasing=True, num_workers=2, output_options=options
        )
        assert_matches_skimage(result[...], image, (2, 2, 2), 1, True)
    else:
        result = copy_flow(image, path, num_workers=2, output_options=options)
        np.testing.assert_array_equal(result[...], image)
    array = zarr.open_array(f"{tmp_path}/out.zarr", path="x", mode="r")
    assert array.shards == shards and all(s % c == 0 for s, c in zip(shards, array.chunks))
    layout = ts_open(path).chunk_layout
    assert (
        tuple(layout.write_chunk.shape) == shards and tuple(layout.read_chunk.shape) == array.chunks
    )
    assert zarr_codec(path) == ("zstd", 3)
    # the grid of a new sharded output follows its shards (the write unit)
    view = (
        ResizedSource(as_source(image), result.shape, 1, True)
        if flow == "downsample"
        else as_source(image)
    )
    plan = plan_blockwise(view, f"{tmp_path}/new.zarr/x", output_options=options)
    assert plan.output.write_unit == shards
    assert all(b % s == 0 or b == n for b, s, n in zip(plan.grid.block_shape, shards, result.shape))


def test_shards_larger_than_the_budget_are_computed_in_pieces(tmp_path, rng):
    image = random_array(rng, (64, 64, 64), "uint16")
    options, config = OutputOptions(shards=(32, 32, 32)), RunnerConfig(memory_budget=2**20)
    view = ResizedSource(as_source(image), (32, 32, 32), 1, True)
    plan = plan_blockwise(
        view, f"{tmp_path}/plan.zarr/x", memory_budget=config.memory_budget, output_options=options
    )
    assert (
        plan.grid.block_shape == (32, 32, 32) and plan.piece_shape is not None
    )  # one shard, in pieces
    result = downsample_flow(
        image,
        2,
        f"{tmp_path}/out.zarr/x",
        order=1,
        anti_aliasing=True,
        job_config=config,
        output_options=options,
    )
    assert result.shards == (32, 32, 32)
    assert_matches_skimage(result[...], image, (2, 2, 2), 1, True)


def half_empty(rng) -> np.ndarray:
    image = random_array(rng, (32, 32, 32), "uint8")
    image[:16] = 0  # the first 16 planes: half of the 8^3 chunks and 16^3 shards hold only zeros
    return image


@pytest.mark.parametrize("kind", ["zarr v3", "zarr v2", "n5", "zarr v3 sharded"])
def test_write_empty_chunks_with_tensorstore_io(tmp_path, rng, kind):
    image = half_empty(rng)
    files = {}
    for write_empty in (False, True):
        (tmp_path / str(write_empty)).mkdir()
        path = output_path(tmp_path / str(write_empty), kind.removesuffix(" sharded"))
        options = OutputOptions(
            write_empty_chunks=write_empty, shards=(16, 16, 16) if "sharded" in kind else None
        )
        output = copy_flow(image, path, block_shape=(8, 8, 8), output_options=options)
        assert kind == "n5" or as_source(output).fast_io is not None  # tensorstore does the I/O
        np.testing.assert_array_equal(ts_open(path).read().result(), image)
        files[write_empty] = chunk_files(path)
    units = 2 * 2 * 2 if "sharded" in kind else 4 * 4 * 4  # shard or chunk files over (32, 32, 32)
    assert len(files[True]) == units
    assert len(files[False]) == units // 2  # the all-zero half is not stored
    if "sharded" in kind:  # 8 inner chunks of 8^3 in each shard file
        assert zarr.open_array(path.rsplit("/", 1)[0], path="x", mode="r").chunks == (8, 8, 8)


def test_write_empty_chunks_with_zarr_python_io(tmp_path, rng):
    """An output tensorstore does not open (here: a store zarr-python wraps) is written by
    zarr-python, which honours the same option through its array config."""
    image = half_empty(rng)
    counts = {}
    for write_empty in (False, True):
        folder = tmp_path / f"{write_empty}.zarr"
        store = zarr.storage.WrapperStore(zarr.storage.LocalStore(str(folder)))
        output = zarr.create_array(
            store=store, name="x", shape=image.shape, dtype="uint8", chunks=(8, 8, 8)
        )
        assert as_source(output).fast_io is None  # zarr-python does the I/O
        copy_flow(image, output, output_options=OutputOptions(write_empty_chunks=write_empty))
        np.testing.assert_array_equal(zarr.open_array(str(folder), path="x", mode="r")[...], image)
        counts[write_empty] = len(chunk_files(str(folder / "x")))
    assert counts == {True: 64, False: 32}


@pytest.mark.parametrize("kind", ["zarr v3", "n5"])
def test_write_empty_chunks_reruns_into_the_same_output(tmp_path, rng, kind):
    """A rerun with write_empty_chunks=True after a run without is another computation (it
    writes other files), so it rewrites the blocks, into the existing output; a rerun of the same
    call resumes."""
    image = half_empty(rng)
    path = output_path(tmp_path, kind)
    copy_flow(image, path, block_shape=(8, 8, 8))
    assert len(chunk_files(path)) == 32
    stored = {name: os.stat(os.path.join(path, name)).st_mtime_ns for name in chunk_files(path)}
    copy_flow(
        image, path, block_shape=(8, 8, 8), output_options=OutputOptions()
    )  # the defaults: resumes
    assert {
        name: os.stat(os.path.join(path, name)).st_mtime_ns for name in chunk_files(path)
    } == stored
    copy_flow(
        image, path, block_shape=(8, 8, 8), output_options=OutputOptions(write_empty_chunks=True)
    )
    assert len(chunk_files(path)) == 64


def test_dask_workers_honour_the_options(tmp_path, rng):
    """Worker processes get the sink pickled and open their own tensorstore handle: the zarr
    array's write_empty_chunks config travels with it."""
    from bioimage_tasks.runners import LocalClusterConfig

    image = half_empty(rng)
    zarr.create_array(
        store=str(tmp_path / "in.zarr"),
        name="raw",
        shape=image.shape,
        dtype="uint8",
        chunks=(8, 8, 8),
    )[:] = image
    path = f"{tmp_path}/out.zarr/x"
    copy_flow(
        f"{tmp_path}/in.zarr/raw",
        path,
        block_shape=(8, 8, 8),
        job_type="subprocess",
        num_workers=2,
        job_config=LocalClusterConfig(worker_timeout=120),
        output_options=OutputOptions(codec="gzip", shards=(16, 16, 16), write_empty_chunks=True),
    )
    assert len(chunk_files(path)) == 8 and zarr_codec(path) == ("gzip", 6)
    np.testing.assert_array_equal(
        zarr.open_array(f"{tmp_path}/out.zarr", path="x", mode="r")[...], image
    )


def test_pyramid_levels_take_codec_and_write_empty_chunks(tmp_path, rng):
    image = half_empty(rng)
    group = f"{tmp_path}/image.zarr"
    pyramid_flow(
        image,
        group,
        scale_factors=[2],
        chunks=(8, 8, 8),
        output_options=OutputOptions(
            codec="gzip", level=4, shards=(16, 16, 16), write_empty_chunks=True
        ),
    )
    for level, units in ((0, 8), (1, 1)):
        assert zarr_codec(f"{group}/s{level}") == ("gzip", 4)
        assert zarr.open_array(group, path=f"s{level}", mode="r").shards == (16, 16, 16)
        assert len(chunk_files(f"{group}/s{level}")) == units  # all-zero shards of s0 stored too
    np.testing.assert_array_equal(zarr.open_array(group, path="s0", mode="r")[...], image)


BAD = [
    ("zarr v2", {"shards": (16, 16, 16)}, "shards need a zarr v3 output; a new zarr v2"),
    ("n5", {"shards": (16, 16, 16)}, "shards need a zarr v3 output; a new n5"),
    ("zarr v3", {"shards": (16, 16)}, "one entry per axis"),
    ("zarr v3", {"level": 3}, "level needs a codec"),
    ("zarr v3", {"codec": "gzip", "level": 12}, r"gzip must be an integer in \[1, 9\]"),
    ("zarr v3", {"codec": "lz5"}, "codec must be one of"),
    ("zarr v3", {"shards": (16, 0, 16)}, "positive integers"),
    ("zarr v3", {"shards": 16}, "one per axis"),
    ("zarr v3", {"write_empty_chunks": "yes"}, "True or False"),
    ("n5", {"colour": "blue"}, "no field"),
]


@pytest.mark.parametrize("kind, fields, pattern", BAD)
def test_bad_combinations_are_refused_before_any_work(tmp_path, image, kind, fields, pattern):
    path = output_path(tmp_path, kind)
    with pytest.raises(ValueError, match=pattern):
        copy_flow(image, path, output_options=fields)  # a dict, as from a deployment
    assert not os.path.exists(path)


def test_existing_outputs_must_match_what_options_name(tmp_path, image):
    path = f"{tmp_path}/out.zarr/x"
    options = OutputOptions(codec="gzip", level=3, shards=(16, 16, 16))
    copy_flow(image, path, output_options=options)
    before = {name: os.stat(os.path.join(path, name)).st_mtime_ns for name in chunk_files(path)}
    for other, pattern in (
        (
            OutputOptions(codec="zstd"),
            "exists with codec gzip level 3; output_options ask for zstd",
        ),
        (OutputOptions(codec="gzip", level=4), "ask for gzip level 4"),
        (OutputOptions(shards=(32, 32, 32)), r"exists with shards \(16, 16, 16\)"),
    ):
        with pytest.raises(ValueError, match=pattern):
            copy_flow(image, path, output_options=other)
    assert {
        name: os.stat(os.path.join(path, name)).st_mtime_ns for name in chunk_files(path)
    } == before
    copy_flow(
        image, path, output_options=options
    )  # the same options (or fewer) are fine: it resumes
    copy_flow(image, path, output_options=OutputOptions(codec="gzip"))
    copy_flow(image, path)
    assert {
        name: os.stat(os.path.join(path, name)).st_mtime_ns for name in chunk_files(path)
    } == before
    with pytest.raises(ValueError, match="not to a numpy output"):
        copy_flow(image, None, output_options=OutputOptions(write_empty_chunks=True))
    with pytest.raises(ValueError, match="give one"):
        pyramid_flow(
            image,
            f"{tmp_path}/image.zarr",
            scale_factors=[2],
            shards=(8, 8, 8),
            output_options=OutputOptions(shards=(16, 16, 16)),
        )
    with pytest.raises(ValueError, match="shards need zarr v3"):
        pyramid_flow(
            image,
            f"{tmp_path}/image.zarr",
            scale_factors=[2],
            ngff_version="0.4",
            output_options=OutputOptions(shards=(16, 16, 16)),
        )
    assert not os.path.exists(tmp_path / "image.zarr")


def test_options_survive_json_parameters(tmp_path, image):
    """Prefect stores a run's parameters as JSON, and a deployment run (or a healing rerun) calls
    the flow with them: the options come back as a dict, and the schema offers their fields."""
    from prefect import get_client

    options = OutputOptions(
        codec="blosc-lz4", level=3, shards=(16, 16, 16), write_empty_chunks=True
    )
    state = downsample_flow(
        image, 2, f"{tmp_path}/out.zarr/x", method="mean", output_options=options, return_state=True
    )
    with get_client(sync_client=True) as client:
        stored = client.read_flow_run(state.state_details.flow_run_id).parameters["output_options"]
    assert json.loads(json.dumps(stored)) == {
        "codec": "blosc-lz4",
        "level": 3,
        "shards": [16, 16, 16],
        "write_empty_chunks": True,
    }
    again = downsample_flow(
        image, 2, f"{tmp_path}/out.zarr/x", method="mean", output_options=stored, return_state=True
    )
    assert again.is_completed()  # same options, existing output: accepted, resumed
    copy_flow(image, f"{tmp_path}/copy.zarr/x", output_options=stored)
    assert zarr_codec(f"{tmp_path}/copy.zarr/x") == ("blosc-lz4", 3)
    deployment = downsample_flow.to_deployment(
        name="options",
        parameters={
            "input": "in.zarr/raw",
            "scale_factor": 2,
            "output": "out.zarr/s1",
            "output_options": options,
        },
    )
    schema = deployment._parameter_openapi_schema.model_dump()
    assert "output_options" in schema["properties"]
    assert "blosc-lz4" in json.dumps(schema["definitions"])
    # where Prefect validates parameters itself (pydantic), the JSON becomes the dataclass too
    validated = downsample_flow.validate_parameters(
        {"input": "in.zarr/raw", "scale_factor": 2, "output_options": stored}
    )
    assert validated["output_options"] == options


def test_command_line_options(tmp_path, rng):
    image = half_empty(rng)
    zarr.create_array(
        store=str(tmp_path / "in.zarr"),
        name="raw",
        shape=image.shape,
        dtype="uint8",
        chunks=(8, 8, 8),
    )[:] = image
    out = f"{tmp_path}/out.zarr/x"
    done = cli(
        "copy",
        f"{tmp_path}/in.zarr/raw",
        out,
        "--codec",
        "gzip",
        "--level",
        "3",
        "--shards",
        "16,16,16",
        "--write-empty-chunks",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    assert zarr_codec(out) == ("gzip", 3) and zarr.open_array(
        f"{tmp_path}/out.zarr", path="x"
    ).shards == (16, 16, 16)
    assert len(chunk_files(out)) == 8  # the all-zero shards too
    np.testing.assert_array_equal(zarr.open_array(f"{tmp_path}/out.zarr", path="x")[...], image)
    refused = cli(
        "downsample", f"{tmp_path}/in.zarr/raw", f"{tmp_path}/out.n5/x", "--shards", "8,8,8"
    )
    assert refused.returncode == 1 and not os.path.exists(tmp_path / "out.n5")
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert lines[1:] == [
        "error: ParameterError: output_options.shards need a zarr v3 output; a new n5 output "
        "has no shards"
    ]  # after the line that says which engine runs
    shown = cli("pyramid", "--help").stdout  # downsample and copy took theirs above
    for option in ("--codec", "--level", "--shards", "--write-empty-chunks"):
        assert option in shown


@pytest.mark.parametrize(
    "zarr_format, layout",
    [
        (3, {"chunks": (8, 16, 16), "compressors": [{"name": "zstd", "configuration": {}}]}),
        (3, {"chunks": (4, 8, 8), "shards": (8, 16, 16), "dimension_names": ("z", "y", "x")}),
        (2, {"chunks": (8, 16, 16), "compressors": {"id": "gzip", "level": 2}}),
    ],
)
def test_arrays_and_groups_written_directly_are_what_zarr_python_writes(
    tmp_path, rng, zarr_format, layout
):
    """io/local_zarr.py: the second array of a layout (from the first one's metadata) and a group's
    attributes, written without zarr-python's calls, are byte for byte what zarr-python writes,
    with each array's own attributes; the arrays hold data written through them."""
    from bioimage_tasks.io import local_zarr

    create = {"shape": (20, 33, 40), "dtype": "uint16", "fill_value": 0, "zarr_format": zarr_format}
    create |= layout
    ours, theirs = str(tmp_path / "ours.zarr"), str(tmp_path / "theirs.zarr")
    group = local_zarr.new_group(ours, "", zarr_format)
    reference = zarr.open_group(theirs, mode="w", zarr_format=zarr_format)
    assert local_zarr.new_group(ours, "", zarr_format) is None  # exists: zarr-python opens it
    names = ["zarr.json"] if zarr_format == 3 else [".zarray", ".zattrs"]
    data = rng.integers(0, 60000, create["shape"], dtype=np.uint16)
    for key, token in [("s0", "first"), ("s1", "second"), ("s2", "third")]:
        array = local_zarr.create_array(ours, key, {"token": token}, **create)
        zarr.create_array(store=theirs, name=key, attributes={"token": token}, **create)
        for name in names:
            assert (tmp_path / "ours.zarr" / key / name).read_bytes() == (
                tmp_path / "theirs.zarr" / key / name
            ).read_bytes(), (key, name)
        array[:] = data
        np.testing.assert_array_equal(ts_open(f"{ours}/{key}").read().result(), data)
        assert zarr.open_array(ours, path=key, mode="r").attrs["token"] == token
    with pytest.raises(zarr.errors.ContainsArrayError):  # never written over, as zarr-python
        local_zarr.create_array(ours, "s1", {"token": "again"}, **create)
    attributes = {"multiscales": [{"name": "x", "datasets": [{"path": "s0"}]}], "n": 1}
    local_zarr.update_attributes(group, attributes)
    reference.attrs.update(attributes)
    for name in ["zarr.json"] if zarr_format == 3 else [".zgroup", ".zattrs"]:
        assert (tmp_path / "ours.zarr" / name).read_bytes() == (
            tmp_path / "theirs.zarr" / name
        ).read_bytes()
    assert dict(zarr.open_group(ours, mode="r").attrs) == attributes
