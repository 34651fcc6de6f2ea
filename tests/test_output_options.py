"""`OutputOptions` on the real Prefect engine and real files: codecs and levels for zarr v3, zarr
v2 and n5 outputs (metadata read back with zarr-python and tensorstore), shards for
downsample_flow and copy_flow (also within a small memory budget), refusals before any work,
JSON parameters (deployments) and arrays written directly; `write_empty_chunks` and the command
line are in test_output_options_empty_chunks.py."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr
from output_stores import FORMATS, chunk_files, output_path, ts_open, zarr_codec
from reference import assert_matches_skimage, random_array

from bioimage_tasks import OutputOptions, RunnerConfig, as_source
from bioimage_tasks.io.options import stored_codec
from bioimage_tasks.planning import plan_blockwise
from bioimage_tasks.resampling import ResizedSource
from flows import copy_flow, downsample_flow, pyramid_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

SHAPE = (37, 41, 23)


@pytest.fixture
def image(rng) -> np.ndarray:
    return random_array(rng, SHAPE, "uint16")


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
    tokens = [("s0", "first"), ("s1", "second"), ("s2", "third"), ("s3", 'a "quoted" tøken\n')]
    for key, token in tokens:  # from s2 on, the encoded metadata of s1 with the token put in
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
