"""Object storage: real flows against a real S3-compatible server on loopback (moto_server,
tests/conftest.py), never a mock of a client. Exact against scikit-image; records, identity token
and leases in the bucket; a finished rerun writes no object."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import socket
import threading
import time

import numpy as np
import pytest
import tensorstore as ts
import zarr
from helpers import CHUNKS, put_s3, records_location, zarr_input
from reference import skimage_downsample

from bioimage_tasks.errors import ParameterError, StorageError
from bioimage_tasks.io import StorageOptions, UrlPath, as_source, urls
from bioimage_tasks.lease import Holder, LeaseHeldError, _acquire, holders
from bioimage_tasks.records import BlockRecords
from bioimage_tasks.runners import LocalClusterConfig, RunnerConfig
from bioimage_tasks.signatures import region_signature
from flows import copy_flow, downsample_flow, pyramid_flow

SHAPE = (40, 48, 36)


@pytest.fixture
def bucket(s3_server, request) -> str:
    return s3_server.create_bucket(
        re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:60].strip("-")
    )


@pytest.fixture
def image(rng) -> np.ndarray:
    return rng.integers(0, 256, SHAPE, dtype=np.uint8)


def read(array) -> np.ndarray:
    return np.asarray(
        array[...].read().result() if isinstance(array, ts.TensorStore) else array[...]
    )


def expected(x: np.ndarray) -> np.ndarray:
    return np.rint(skimage_downsample(x, (2, 2, 2), 1, True)).clip(0, 255).astype(np.uint8)


def test_flows_between_s3_and_local_are_exact(prefect_server, s3_server, bucket, image, tmp_path):
    put_s3(f"s3://{bucket}/lab/raw.zarr/v3", image)
    put_s3(f"s3://{bucket}/lab/old.zarr/v2", image, zarr_format=2)
    zarr_input(tmp_path, image, CHUNKS, container="raw.zarr")
    # local -> S3 (a new zarr v3), S3 -> S3 (v2 -> n5), S3 -> local
    copied = copy_flow(f"{tmp_path}/raw.zarr/raw", f"s3://{bucket}/out/copy.zarr/raw")
    assert np.array_equal(read(copied), image)
    n5 = copy_flow(f"s3://{bucket}/lab/old.zarr/v2", f"s3://{bucket}/out/copy.n5/raw")
    assert np.array_equal(read(n5), image)
    for source in (f"s3://{bucket}/lab/raw.zarr/v3", f"s3://{bucket}/out/copy.n5/raw"):
        assert np.array_equal(
            read(
                downsample_flow(
                    source, 2, f"{tmp_path}/out.zarr/{source[-6:-4]}", order=1, anti_aliasing=True
                )
            ),
            expected(image),
        )
    s1 = downsample_flow(
        f"s3://{bucket}/lab/raw.zarr/v3",
        2,
        f"s3://{bucket}/lab/raw.zarr/s1",
        order=1,
        anti_aliasing=True,
    )
    assert np.array_equal(read(s1), expected(image))
    v2 = downsample_flow(
        f"s3://{bucket}/lab/old.zarr/v2", 2, f"s3://{bucket}/lab/old.zarr/s1", method="mean"
    )
    assert v2.spec().to_json()["driver"] == "zarr"  # v2 inside a v2 container
    assert (
        region_signature(as_source(f"s3://{bucket}/lab/old.zarr/v2"), (slice(0, 16),) * 3)
        is not None
    )  # ETags
    # zarr-python (over s3fs) reads what we wrote, token attribute included
    other = zarr.open_array(
        f"s3://{bucket}/lab/raw.zarr/s1",
        mode="r",
        storage_options={"endpoint_url": s3_server.endpoint},
    )
    assert (
        np.array_equal(other[...], expected(image))
        and len(other.attrs["bioimage_tasks_token"]) == 32
    )
    # a pyramid from an S3 input into a local group
    group = pyramid_flow(
        f"s3://{bucket}/lab/raw.zarr/v3",
        str(tmp_path / "image.ome.zarr"),
        scale_factors=[2],
        method="mean",
    )
    assert zarr.open_array(f"{group}/s1").shape == (20, 24, 18)


def test_pyramid_s3_to_s3(prefect_server, s3_server, bucket, image):
    source = f"s3://{bucket}/raw.zarr/v3"
    put_s3(source, image)
    group = pyramid_flow(
        source,
        f"s3://{bucket}/image.ome.zarr",
        levels=2,
        voxel_size=(1.0, 1.0, 1.0),
        method="mean",
        chunks=(8, 8, 8),
    )
    base = ts.open(
        {"driver": "zarr3", "kvstore": UrlPath.parse(source, "test").location().spec}
    ).result()
    for level in (1, 2):
        reference = ts.downsample(base, [2**level] * 3, "mean")[...].read().result()
        assert np.array_equal(read(as_source(f"{group}/s{level}").array), reference)
    other = zarr.open_group(group, mode="r", storage_options={"endpoint_url": s3_server.endpoint})
    assert [d["path"] for d in other.attrs["ome"]["multiscales"][0]["datasets"]] == [
        "s0",
        "s1",
        "s2",
    ]
    mark = len(s3_server.requests())
    pyramid_flow(
        source, group, levels=2, voxel_size=(1.0, 1.0, 1.0), method="mean", chunks=(8, 8, 8)
    )
    rewritten = [p for m, p in s3_server.writes_since(mark) if "/.bioimage-tasks/lease/" not in p]
    assert rewritten == []  # a rerun writes only its lease
    mark = len(s3_server.requests())
    with pytest.raises(ParameterError, match="is an array; a pyramid is a group"):
        pyramid_flow(source, f"s3://{bucket}/raw.zarr//v3/", scale_factors=[2])
    with pytest.raises(ParameterError, match="image.ome.zarr' is a group, not an array"):
        copy_flow(source, group)
    assert s3_server.writes_since(mark) == []


def test_rerun_writes_no_object_and_resumes(prefect_server, s3_server, bucket, image):
    source, output = f"s3://{bucket}/raw.zarr/v3", f"s3://{bucket}/raw.zarr/s1"
    put_s3(source, image)
    first = downsample_flow(
        source, 2, output, method="mean", block_shape=(8, 8, 8), block_ids=[0, 1, 2]
    )
    mark = len(s3_server.requests())
    downsample_flow(
        source, 2, output, method="mean", block_shape=(8, 8, 8)
    )  # resumes: the other blocks only
    chunk_writes = [p for m, p in s3_server.writes_since(mark) if m == "PUT" and "/s1/c/" in p]
    n_blocks = 3 * 3 * 3  # 20 x 24 x 18 in 8^3 blocks, one chunk each
    assert (
        len(chunk_writes) == n_blocks - 3
        and len(BlockRecords(records_location(output)).done()) == n_blocks
    )
    mark = len(s3_server.requests())
    again = downsample_flow(source, 2, output, method="mean", block_shape=(8, 8, 8))
    assert s3_server.writes_since(mark) == []  # no chunk, no record, no lease, no attribute
    window = image.reshape(20, 2, 24, 2, 18, 2).mean(axis=(1, 3, 5))
    assert (
        np.array_equal(read(again), np.rint(window).astype(np.uint8)) and first.shape == again.shape
    )


def test_changed_input_object_is_recomputed(prefect_server, s3_server, bucket, image):
    source, output = f"s3://{bucket}/raw.zarr/v3", f"s3://{bucket}/copy.zarr/raw"
    put_s3(source, image)
    copy_flow(source, output, block_shape=CHUNKS)
    changed = image.copy()
    changed[:16, :16, :16] = 7  # one input chunk object rewritten
    ts.open({"driver": "zarr3", "kvstore": UrlPath.parse(source, "test").location().spec}).result()[
        :16, :16, :16
    ].write(changed[:16, :16, :16]).result()
    mark = len(s3_server.requests())
    result = copy_flow(source, output, block_shape=CHUNKS)
    chunk_writes = [p for m, p in s3_server.writes_since(mark) if m == "PUT" and "/raw/c/" in p]
    assert chunk_writes == [f"/{bucket}/copy.zarr/raw/c/0/0/0"]
    assert np.array_equal(read(result), changed)


def test_lease_refuses_a_second_computation_on_s3(prefect_server, s3_server, bucket, image):
    source, output = f"s3://{bucket}/raw.zarr/v3", f"s3://{bucket}/raw.zarr/s1"
    put_s3(source, image)
    downsample_flow(source, 2, output)
    location = UrlPath.parse(output, "test").location()
    ghost = Holder("flow-run-elsewhere", host="node-7", pid=1)
    _acquire(location, "another computation", ghost, "node-7:1:x", ttl=120.0)
    assert holders(location) == ("another computation", [ghost])
    with pytest.raises(LeaseHeldError, match="node-7"):
        downsample_flow(source, 2, output, method="max")
    _acquire(
        location, "another computation", ghost, "node-7:1:x", ttl=0.01
    )  # its last renewal, then it died
    assert np.array_equal(
        read(downsample_flow(source, 2, output, method="max")),
        image.reshape(20, 2, 24, 2, 18, 2).max(axis=(1, 3, 5)),
    )


def test_dask_workers_reach_s3(prefect_server, s3_server, bucket, image, monkeypatch):
    source = f"s3://{bucket}/raw.zarr/v3"
    put_s3(source, image)
    monkeypatch.delenv(
        "AWS_ENDPOINT_URL"
    )  # the endpoint is a parameter (a dict, as a deployment gives it) ...
    result = downsample_flow(
        source,
        2,
        f"s3://{bucket}/raw.zarr/s1",
        order=1,
        anti_aliasing=True,
        job_type="subprocess",
        num_workers=2,
        job_config=LocalClusterConfig(blocks_per_task=1),
        storage_options={"endpoint_url": s3_server.endpoint},
    )  # ... the key pair the environment
    assert np.array_equal(read(result), expected(image))
    records = records_location(f"s3://{bucket}/raw.zarr/s1", {"endpoint_url": s3_server.endpoint})
    executors = BlockRecords(records).executors()
    assert len(set(executors.values())) >= 1 and all(":" in e for e in executors.values())


@pytest.mark.parametrize("given_as", ["slug", "block"])
def test_result_storage_block_on_s3(prefect_server, s3_server, bucket, image, given_as):
    """Prefect's result storage as a saved block's slug, or as the block object itself (saved by
    the run, under a name derived from its settings)."""
    from prefect.filesystems import RemoteFileSystem

    put_s3(f"s3://{bucket}/raw.zarr/v3", image)
    storage = RemoteFileSystem(
        basepath=f"s3://{bucket}/prefect-results",
        settings={"client_kwargs": {"endpoint_url": s3_server.endpoint}},
    )
    if given_as == "slug":
        storage.save("s3-results", overwrite=True)
    config = RunnerConfig(
        result_storage="remote-file-system/s3-results" if given_as == "slug" else storage
    )
    result = copy_flow(
        f"s3://{bucket}/raw.zarr/v3", f"s3://{bucket}/copy.zarr/raw", job_config=config
    )
    assert np.array_equal(read(result), image)
    written = [
        p for m, p in s3_server.requests() if m == "PUT" and f"/{bucket}/prefect-results/" in p
    ]
    assert written, "the batches' results went to the block's bucket"


def test_http_input_is_read_only(prefect_server, image, tmp_path):
    zarr_input(tmp_path, image, CHUNKS, container="pub.zarr")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pub.zarr/raw"
        assert np.array_equal(
            read(downsample_flow(url, 2, order=1, anti_aliasing=True)), expected(image)
        )
        # python's http.server sends no ETag: no signature (records then vouch for the run key only)
        assert region_signature(as_source(url), (slice(0, 16),) * 3) is None
        with pytest.raises(ValueError, match="read-only"):
            copy_flow(
                str(tmp_path / "pub.zarr/raw"),
                f"http://127.0.0.1:{server.server_address[1]}/x.zarr/y",
            )
    finally:
        server.shutdown()


def test_output_options_on_s3(prefect_server, s3_server, bucket, image):
    from bioimage_tasks.io import OutputOptions
    from bioimage_tasks.io.options import stored_codec

    x = image.copy()
    x[:16] = 0  # all-zero chunks: left out unless write_empty_chunks
    for options, url in (
        (OutputOptions(codec="blosc-lz4", level=3), f"s3://{bucket}/a.zarr/v3"),
        (OutputOptions(codec="gzip", write_empty_chunks=True), f"s3://{bucket}/b.n5/raw"),
    ):
        out = copy_flow(x, url, block_shape=CHUNKS, output_options=options)
        assert np.array_equal(read(out), x)
        assert stored_codec(out.spec().to_json()["metadata"]) == (
            options.codec,
            options.effective_level,
        )
        keys = UrlPath.parse(url, "test").location().keys()
        chunk_keys = [k for k in keys if k[0].isdigit() or k.startswith("c/")]
        assert len(chunk_keys) == (27 if options.write_empty_chunks else 27 - 9), chunk_keys


def test_bad_urls_fail_before_any_work(s3_server, bucket, monkeypatch):
    with pytest.raises(ValueError, match="input must be 's3://bucket"):
        as_source(f"s3://{bucket}")
    with pytest.raises(ValueError, match="gs:// is not supported"):
        as_source("gs://lab/raw.zarr/v")
    with pytest.raises(ValueError, match="container.zarr"):
        as_source(f"s3://{bucket}/no/container")
    with pytest.raises(ValueError, match="bucket 'no-such-bucket' does not exist"):
        as_source("s3://no-such-bucket/raw.zarr/v")
    with pytest.raises(FileNotFoundError, match="input: no zarr array"):
        as_source(f"s3://{bucket}/raw.zarr/missing")
    with pytest.raises(ValueError, match="output: bucket 'no-such-bucket' does not exist"):
        copy_flow(np.zeros((4, 4), np.uint8), "s3://no-such-bucket/out.zarr/x")
    with pytest.raises(StorageError, match=r"input: cannot reach .* http://127.0.0.1:9 cannot be"):
        as_source(
            f"s3://{bucket}/raw.zarr/v", storage_options={"endpoint_url": "http://127.0.0.1:9"}
        )
    with pytest.raises(ValueError, match="unknown fields"):
        as_source(f"s3://{bucket}/raw.zarr/v", storage_options={"secret": "x"})
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(ValueError, match="no S3 endpoint"):
        as_source(f"s3://{bucket}/raw.zarr/v")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(ValueError, match="no S3 credentials"):
        as_source(
            f"s3://{bucket}/raw.zarr/v",
            storage_options=StorageOptions(endpoint_url=s3_server.endpoint),
        )


S3_COPY_SCRIPT = """
import sys
import numpy as np
from flows import copy_flow, downsample_flow, pyramid_flow
bucket = sys.argv[1]
image = np.arange(16 * 16 * 16, dtype=np.uint16).reshape(16, 16, 16)
copy_flow(image, f"s3://{bucket}/copy.zarr/raw", block_shape=(8, 8, 8))
downsample_flow(f"s3://{bucket}/copy.zarr/raw", 2, f"s3://{bucket}/copy.zarr/s1", method="mean")
pyramid_flow(f"s3://{bucket}/copy.zarr/raw", f"s3://{bucket}/image.ome.zarr", scale_factors=[2],
             method="mean")
print("done")
"""


def test_s3_runs_keep_stderr_free_of_aws_file_errors(s3_server, bucket, subprocess_env, tmp_path):
    """tensorstore's AWS client logs "Failed to open file ... ~/.aws/credentials" (and config)
    lines when it looks for credential files; runs with environment credentials must not. HOME
    points at an empty folder, so those files are missing whatever this machine holds."""
    import subprocess
    import sys

    path = os.pathsep.join([os.getcwd(), subprocess_env["PYTHONPATH"]])
    env = subprocess_env | {"HOME": str(tmp_path), "PYTHONPATH": path}
    for name in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_PROFILE"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", S3_COPY_SCRIPT, bucket],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("done"), done.stderr[-3000:]
    assert "Failed to open file" not in done.stderr, done.stderr[-3000:]
    assert ".aws/" not in done.stderr, done.stderr[-3000:]
    window = np.arange(16**3, dtype=np.uint16).reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5))
    assert np.array_equal(read(as_source(f"s3://{bucket}/copy.zarr/s1").array), np.rint(window))


@pytest.fixture
def silent_endpoint():
    """An endpoint on loopback that accepts connections and never answers (a hung server, or a
    load balancer in front of nothing)."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept_forever():
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


def test_an_endpoint_that_never_answers_is_refused_quickly(
    prefect_server, silent_endpoint, monkeypatch
):
    """tensorstore alone waits about 185 s; the first open of a URL gives up after PROBE_TIMEOUT
    (10 s) with a StorageError naming the endpoint, for an input and for an output."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    started = time.monotonic()
    options = {"endpoint_url": silent_endpoint}
    with pytest.raises(StorageError, match=rf"input: .*{silent_endpoint} did not answer within 10"):
        as_source("s3://lab/raw.zarr/v", storage_options=options)
    assert time.monotonic() - started < 30
    monkeypatch.setattr(urls, "PROBE_TIMEOUT", 1.0)  # the same path, quicker
    started = time.monotonic()
    with pytest.raises(
        StorageError,
        match=rf"output: cannot reach s3://lab/out.zarr/x: the "
        rf"endpoint {silent_endpoint} did not answer within 1",
    ):
        copy_flow(np.zeros((4, 4), np.uint8), "s3://lab/out.zarr/x", storage_options=options)
    assert time.monotonic() - started < 30
