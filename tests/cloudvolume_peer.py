"""Run inside the cloud-volume peer venv (tests/test_precomputed.py): write a precomputed
volume from a .npy array, or read one scale of a volume into a .npy file. One JSON request
per call: {"op": "write", "data", "path", "layer_type", "encoding", "resolution", "chunk",
"offset", "sharding", "compress"} or {"op": "read", "path", "mip", "out"}; prints the volume's
info."""

import json
import sys

import numpy as np
from cloudvolume import CloudVolume


def write(request: dict) -> CloudVolume:
    data = np.load(request["data"])  # (z, y, x) or (c, z, y, x)
    xyzc = data.T if data.ndim == 4 else data.T[..., None]
    info = CloudVolume.create_new_info(
        num_channels=xyzc.shape[3],
        layer_type=request["layer_type"],
        data_type=str(data.dtype),
        encoding=request["encoding"],
        resolution=request["resolution"],
        voxel_offset=request.get("offset", [0, 0, 0]),
        chunk_size=request["chunk"],
        volume_size=list(xyzc.shape[:3]),
    )
    if request.get("sharding"):
        info["scales"][0]["sharding"] = request["sharding"]
    compress = request.get("compress", False)  # "gzip": unsharded chunks as `<chunk>.gz` files
    volume = CloudVolume("file://" + request["path"], info=info, compress=compress, progress=False)
    volume.commit_info()
    start = volume.bounds.minpt
    volume[start[0] :, start[1] :, start[2] :] = np.asfortranarray(xyzc)
    return volume


def read(request: dict) -> CloudVolume:
    volume = CloudVolume(
        "file://" + request["path"], mip=request["mip"], fill_missing=True, progress=False
    )
    start = volume.bounds.minpt
    xyzc = np.asarray(volume[start[0] :, start[1] :, start[2] :])
    np.save(request["out"], xyzc.T if xyzc.shape[3] > 1 else xyzc[..., 0].T)
    return volume


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    volume = write(request) if request["op"] == "write" else read(request)
    print(json.dumps(volume.info))
