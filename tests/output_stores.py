"""Output stores shared by the output-option tests: a path per format (zarr v3, zarr v2, n5), the
array opened by tensorstore, its codec as zarr-python reads it, and its chunk (or shard) files."""

from __future__ import annotations

import os

import tensorstore as ts
import zarr

FORMATS = {"zarr v3": "out.zarr/x", "zarr v2": "v2.zarr/x", "n5": "out.n5/x"}


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
