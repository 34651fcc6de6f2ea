"""Neuroglancer precomputed volumes checked without the cloud-volume peer: a partial pyramid run
resumed, refusals before writing, volumes on S3, scales added in place (also by the CLI) and
murmurhash-sharded volumes, against tensorstore's downsample and its own reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
from helpers import record_times
from precomputed_volumes import SHARDING, downsampled, image, labels

from bioimage_tasks import copy, pyramid
from bioimage_tasks.errors import BlocksFailedError, ParameterError
from bioimage_tasks.io import as_source
from bioimage_tasks.runners import RunnerConfig


@dataclass(frozen=True)
class FlakyInput:
    """A precomputed input whose reads fail from z = `fail_from` on while `flag` exists."""

    path: str
    fail_from: int
    flag: str

    def _inner(self):
        return as_source(self.path)

    shape = property(lambda self: self._inner().shape)
    dtype = property(lambda self: self._inner().dtype)
    write_unit = property(lambda self: self._inner().write_unit)
    physical = property(lambda self: self._inner().physical)

    def fingerprint(self) -> dict:
        return self._inner().fingerprint()

    def __getitem__(self, key) -> np.ndarray:
        if os.path.exists(self.flag) and key[0].start >= self.fail_from:
            raise OSError("injected read failure")
        return self._inner()[key]


def test_pyramid_resumes_after_a_partial_run(tmp_path, rng):
    base = image(rng, (256, 128, 128))  # two regions of 128**3 (pyramid_plan.py's least)
    source = f"precomputed://{tmp_path}/in"
    pyramid(base, source, levels=0, chunks=(16, 16, 16))  # a precomputed input of our own
    flag = tmp_path / "fail"
    flag.touch()
    flaky, output = FlakyInput(source, 128, str(flag)), f"precomputed://{tmp_path}/out"
    config = RunnerConfig(memory_budget=2**20)
    with pytest.raises(BlocksFailedError):
        pyramid(
            flaky,
            output,
            scale_factors=[2, 2],
            chunks=(16, 16, 16),
            job_config=config,
            num_workers=2,
        )
    done = record_times(str(tmp_path / "out"))
    assert set(done) == {0}
    flag.unlink()
    started = time.time()
    pyramid(
        flaky, output, scale_factors=[2, 2], chunks=(16, 16, 16), job_config=config, num_workers=2
    )
    again = {b for b, t in record_times(str(tmp_path / "out")).items() if t >= started}
    assert again == {1}  # only the region that failed ran again
    for level, total in enumerate([(1, 1, 1), (2, 2, 2), (4, 4, 4)]):
        key = f"{total[0]}_{total[0]}_{total[0]}"
        np.testing.assert_array_equal(
            as_source(f"{tmp_path}/out/{key}")[:, :, :], downsampled(base, total, "mean")
        )


def test_refusals_name_the_parameter_before_writing(tmp_path, rng):
    base = image(rng)
    with pytest.raises(ParameterError, match="shards"):
        pyramid(
            base, f"precomputed://{tmp_path}/a", levels=1, chunks=(8, 16, 16), shards=(8, 48, 16)
        )
    with pytest.raises(ParameterError, match="units"):
        pyramid(base, f"precomputed://{tmp_path}/b", levels=1, units="inch")
    with pytest.raises(ParameterError, match="precomputed volume holds"):
        pyramid(base.astype(np.float64), f"precomputed://{tmp_path}/c", levels=1)
    with pytest.raises(ParameterError, match="codec"):
        copy(base, f"precomputed://{tmp_path}/d", output_options={"codec": "zstd"})
    assert not any(os.path.exists(tmp_path / n) for n in "abcd")


def test_precomputed_on_s3(s3_server, tmp_path, rng):
    bucket = s3_server.create_bucket("precomputed-test")
    base = image(rng, (32, 64, 48))
    url = f"precomputed://s3://{bucket}/lab/vol"
    copy(base, url)  # a single-scale volume on S3
    assert pyramid(url, url, levels=2, chunks=None) == url  # scales added in place, on S3
    for key, total in (("2_2_2", (2, 2, 2)), ("4_4_4", (4, 4, 4))):
        source = as_source(f"s3://{bucket}/lab/vol/{key}")
        np.testing.assert_array_equal(source[:, :, :], downsampled(base, total, "mean"))
    scales = json.loads(as_source(url).volume.location().read("info"))["scales"]
    assert [s["key"] for s in scales] == ["1_1_1", "2_2_2", "4_4_4"]
    records = as_source(url).volume.location().child(".bioimage-tasks").names()
    assert "blocks" in records


@pytest.mark.parametrize("encoding", ["raw", "compressed_segmentation"])
def test_scales_added_in_place_follow_the_volume(tmp_path, rng, encoding):
    """As igneous does, new scales take the volume's type and its scale 0's encoding, whatever
    `labels` says."""
    base = labels(rng, (32, 32, 32))
    scale = {"key": "8_8_8", "size": [32] * 3, "resolution": [8] * 3, "chunk_size": [16] * 3}
    scale |= {"encoding": encoding, "voxel_offset": [0, 0, 0]}
    if encoding != "raw":
        scale["compressed_segmentation_block_size"] = [8, 8, 8]
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": f"{tmp_path}/v/"},
        "multiscale_metadata": {"type": "segmentation", "data_type": "uint32", "num_channels": 1},
        "scale_metadata": scale,
    }
    ts.open(spec, create=True).result()[ts.d["channel"][0]].T.write(base).result()
    url = f"precomputed://{tmp_path}/v"
    pyramid(url, url, scale_factors=[2, 2], method="mode", labels=encoding == "raw")
    info = json.loads((tmp_path / "v" / "info").read_text())
    assert info["type"] == "segmentation"
    assert [s["encoding"] for s in info["scales"]] == [encoding] * 3
    for level in (1, 2):
        np.testing.assert_array_equal(
            as_source(f"{url}/{info['scales'][level]['key']}")[:, :, :],
            downsampled(base, (2**level,) * 3, "mode"),
        )


def test_cli_adds_scales_in_place(tmp_path, rng):
    base = image(rng, (16, 32, 32))
    volume = f"precomputed://{tmp_path}/vol"
    copy(base, volume)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the plain API
    done = subprocess.run(
        [sys.executable, "-m", "bioimage_tasks.cli", "pyramid", volume, volume, "--factors", "2;2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(
        as_source(f"{tmp_path}/vol/4_4_4")[:, :, :], downsampled(base, (4, 4, 4), "mean")
    )


MURMUR_SHARDING = SHARDING | {
    "hash": "murmurhash3_x86_128",
    "preshift_bits": 0,
    "minishard_bits": 1,
    "shard_bits": 5,
}


def murmur_volume(folder: Path, data: np.ndarray | None) -> ts.TensorStore:
    """A (z, y, x) 64^3 uint8 volume of 16^3 chunks, murmurhash-sharded, written by tensorstore."""
    scale = {"key": "8_8_8", "size": [64] * 3, "resolution": [8] * 3, "chunk_size": [16] * 3}
    scale |= {"encoding": "raw", "voxel_offset": [0, 0, 0], "sharding": MURMUR_SHARDING}
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": {"driver": "file", "path": f"{folder}/"},
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
        "scale_metadata": scale,
    }
    store = ts.open(spec, open=True, create=True).result()[ts.d["channel"][0]].T
    if data is not None:
        store.write(data).result()
    return store


def test_murmurhash_shard_files_are_named_as_tensorstore_writes_them(tmp_path):
    store = murmur_volume(tmp_path / "v", None)
    files = as_source(f"precomputed://{tmp_path}/v").files
    seen: set[str] = set()
    for z, y, x in [(0, 0, 0), (1, 0, 0), (0, 3, 2), (3, 3, 3), (2, 1, 3), (1, 2, 0)]:
        store[z * 16 : z * 16 + 16, y * 16 : y * 16 + 16, x * 16 : x * 16 + 16].write(1).result()
        now = {n for n in os.listdir(tmp_path / "v" / "8_8_8") if n.endswith(".shard")}
        written = files.names((z * 16, y * 16, x * 16), (z * 16 + 1, y * 16 + 1, x * 16 + 1))
        assert len(written) == 1 and written[0] in now and now - seen <= set(written)
        seen = now


def test_a_changed_murmurhash_sharded_input_is_redone(tmp_path, rng):
    """Block signatures stamp the shard files a block's chunks hash to: a chunk rewritten after
    a run makes the next run redo the blocks whose shards changed, not the others."""
    base = image(rng, (64, 64, 64))
    store = murmur_volume(tmp_path / "v", base)
    source, output = f"precomputed://{tmp_path}/v", str(tmp_path / "out.zarr" / "a")
    copy(source, output, block_shape=(32, 32, 32))
    changed = base.copy()
    changed[32:48, 0:16, 16:32] = 255  # one chunk, in block 4 of 8
    time.sleep(0.01)
    store[32:48, 0:16, 16:32].write(changed[32:48, 0:16, 16:32]).result()
    started = time.time()
    result = copy(source, output, block_shape=(32, 32, 32))
    from helpers import executed_since

    redone = executed_since(output, started)
    assert 4 in redone and len(redone) < 8
    np.testing.assert_array_equal(result[...], changed)
