"""Arrays at URLs, through tensorstore's kvstores: `s3://bucket/prefix/container.zarr/key` (zarr v3,
zarr v2 and n5; read and written, block records and leases kept in the bucket beside the array)
and `http(s)://host/path/container.zarr/key` (read-only). `gs://` is refused: tensorstore's gcs
driver would likely work the same way, but nothing here could test it.

Credentials never travel in parameters: each process (the flow, every Dask or SLURM worker)
takes them from its own environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`) or a profile of `~/.aws/credentials`. The endpoint and region are resolved
once, where the URL is parsed (`StorageOptions`, else `AWS_ENDPOINT_URL`, `AWS_REGION`), and are
part of the tensorstore spec that pickles to workers; tensorstore itself ignores
`AWS_ENDPOINT_URL`."""

from __future__ import annotations

import dataclasses
import functools
import http.client
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorstore as ts

from bioimage_tasks.errors import ParameterError, StorageError
from bioimage_tasks.io.kv import JsonAttributes, KvLocation
from bioimage_tasks.io.n5 import TensorStoreSource
from bioimage_tasks.io.options import OutputOptions
from bioimage_tasks.io.paths import ContainerPath, node_kind

SCHEMES = ("s3", "http", "https")
METADATA = {"zarr3": "zarr.json", "zarr": ".zarray", "n5": "attributes.json"}
# zarr-python's defaults, for new outputs without a codec in their OutputOptions
DEFAULT_CODECS = {
    2: {"id": "zstd", "level": 0},
    3: [{"name": "zstd", "configuration": {"level": 0, "checksum": False}}],
}
# Seconds an endpoint has, when a URL is first opened, to answer at all (see `check_answers`).
PROBE_TIMEOUT = 10.0
# A probe gives up after a few quick retries: an unreachable endpoint is reported at once.
PROBE_CONTEXT = {
    "s3_request_retries": {"max_retries": 2, "initial_delay": "0.1s", "max_delay": "0.5s"},
    "http_request_retries": {"max_retries": 2, "initial_delay": "0.1s", "max_delay": "0.5s"},
}


def is_url(path: Any) -> bool:
    return isinstance(path, str) and "://" in path


@dataclass(frozen=True)
class StorageOptions:
    """Where an object store is and how to sign requests to it (no secrets: see the module).
    `endpoint_url` defaults to `AWS_ENDPOINT_URL` (e.g. "https://s3.eu-west-1.amazonaws.com",
    "http://minio.lab:9000"), `region` to `AWS_REGION` / `AWS_DEFAULT_REGION`, else "us-east-1".
    `profile` names a profile of `~/.aws/credentials`; `anonymous` sends unsigned requests
    (public buckets). A Prefect parameter or deployment may give it as a dict of these fields."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    anonymous: bool = False

    @classmethod
    def coerce(cls, value: StorageOptions | dict | None) -> StorageOptions:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ParameterError(f"storage_options has unknown fields {sorted(unknown)}")
            return cls(**value)
        raise TypeError(
            f"storage_options must be a StorageOptions or a dict, got {type(value).__name__}"
        )

    def resolved(self) -> StorageOptions:
        """These options with the endpoint and region taken from the environment where unset."""
        endpoint = (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = (
            self.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        return dataclasses.replace(self, endpoint_url=endpoint, region=region)

    def credentials(self) -> dict:
        if self.anonymous:
            return {"type": "anonymous"}
        if self.profile:
            return {"type": "profile", "profile": self.profile}
        return {"type": "environment"}


@dataclass(frozen=True)
class UrlPath:
    """`"s3://lab/raw.zarr/volume"` as scheme s3, host (bucket) `lab`, container `raw.zarr`,
    key `volume`, format zarr, and the options to reach it."""

    scheme: str
    host: str
    container: str
    key: str
    format: str
    options: StorageOptions

    @classmethod
    def parse(
        cls, url: str, parameter: str, options: StorageOptions | dict | None = None
    ) -> UrlPath:
        """Check the URL and the means to reach it (ValueError naming `parameter`); reads
        nothing."""
        scheme, _, rest = url.partition("://")
        if scheme == "gs":
            raise ParameterError(
                f"{parameter}: gs:// is not supported (only s3:// and read-only http(s)://), "
                f"got {url!r}"
            )
        if scheme not in SCHEMES:
            raise ParameterError(
                f"{parameter}: unsupported URL scheme {scheme!r} (s3:// or http(s)://), got {url!r}"
            )
        host, _, inside = rest.partition("/")
        if not host or not inside:
            raise ParameterError(
                f"{parameter} must be "
                f"'{scheme}://{'bucket' if scheme == 's3' else 'host'}/path/container.zarr/key', "
                f"got {url!r}"
            )
        path = ContainerPath.parse(inside, parameter)
        options = StorageOptions.coerce(options).resolved()
        if scheme == "s3":
            if not options.endpoint_url:
                raise ParameterError(
                    f"{parameter}: no S3 endpoint for {url!r}: set AWS_ENDPOINT_URL or "
                    "storage_options=StorageOptions(endpoint_url=...) (for AWS e.g. https://s3.us-east-1.amazonaws.com)"
                )
            if not (
                options.anonymous
                or options.profile
                or os.environ.get("AWS_ACCESS_KEY_ID")
                and os.environ.get("AWS_SECRET_ACCESS_KEY")
            ):
                raise ParameterError(
                    f"{parameter}: no S3 credentials for {url!r}: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or storage_options profile=... or anonymous=True"
                )
        return cls(scheme, host, path.container, path.key, path.format, options)

    @property
    def writable(self) -> bool:
        return self.scheme == "s3"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}/{self.container}" + (
            f"/{self.key}" if self.key else ""
        )

    def kvstore_spec(self, path: str) -> dict:
        """The tensorstore kvstore spec of `path` (inside the bucket or host, ending in "/")."""
        if self.scheme == "s3":
            return {
                "driver": "s3",
                "bucket": self.host,
                "path": path,
                "endpoint": self.options.endpoint_url,
                "aws_region": self.options.region,
                "aws_credentials": self.options.credentials(),
            }
        return {"driver": "http", "base_url": f"{self.scheme}://{self.host}", "path": f"/{path}"}

    def location(self, sub: str | None = None) -> KvLocation:
        """The array's folder (or `sub`, relative to the container) as a KvLocation."""
        inside = self.key if sub is None else sub
        path = "/".join(p for p in (self.container, inside) if p)
        return KvLocation(self.kvstore_spec(f"{path}/"), f"{self.scheme}://{self.host}/{path}")

    @property
    def endpoint(self) -> str:
        """The server this URL's requests go to: the S3 endpoint, or the http(s) host."""
        return self.options.endpoint_url if self.scheme == "s3" else f"{self.scheme}://{self.host}"

    def _probe(self, sub: str | None, names: tuple[str, ...]) -> list[bool]:
        """Which of `names` exist under `sub`, asked with quick retries, once the endpoint has
        answered (`check_answers`: a StorageError within PROBE_TIMEOUT otherwise); a missing
        bucket is a ParameterError, another refusal a StorageError."""
        endpoint = self.endpoint.rstrip("/")
        root = f"{endpoint}/{self.host}" if self.scheme == "s3" else f"{endpoint}/"  # the bucket
        check_answers(root, endpoint, str(self))
        spec = self.location(sub).spec
        try:
            store = ts.KvStore.open(spec, context=ts.Context(PROBE_CONTEXT)).result()
            if self.scheme == "s3":  # a read of a missing bucket says "missing"; a listing says why
                store.list(ts.KvStore.KeyRange(names[0], names[0] + "\0")).result()
            futures = [store.read(name, byte_range=slice(0, 0)) for name in names]
            return [f.result().state == "value" for f in futures]
        except ValueError as error:
            text = str(error)
            if "NoSuchBucket" in text:
                raise ParameterError(
                    f"bucket {self.host!r} does not exist at {self.options.endpoint_url} ({self})"
                ) from None
            raise StorageError(f"cannot reach {self}: {text.splitlines()[0][:300]}") from None

    def driver(self) -> str | None:
        """The tensorstore driver of the array at this URL (by its metadata file), None if
        absent."""
        drivers = ("n5",) if self.format == "n5" else ("zarr3", "zarr")
        found = self._probe(self.key, tuple(METADATA[d] for d in drivers))
        return next((d for d, present in zip(drivers, found) if present), None)

    def exists(self) -> bool:
        return self.driver() is not None

    def node(self) -> str | None:
        """ "array", "group" (by its zarr or n5 metadata) or None: object storage has no folders."""
        names = ("attributes.json",) if self.format == "n5" else ("zarr.json", ".zarray", ".zgroup")
        found = self._probe(self.key, names)
        if not any(found):
            return None
        name = names[found.index(True)]
        return node_kind(name, self.location().read(name) or b"{}")

    def zarr_format(self) -> int:
        """2 inside an existing zarr v2 container, else 3."""
        return 2 if self._probe("", (".zgroup",))[0] else 3

    def _spec(self, driver: str) -> dict:
        return {"driver": driver, "kvstore": self.location().spec}

    def open(self, mode: str = "r") -> TensorStoreSource:
        driver = self.driver()
        if driver is None:
            raise FileNotFoundError(f"no {self.format} array at {str(self)!r}")
        store = ts.open(
            self._spec(driver), open=True, read=True, write=mode != "r" and self.writable
        ).result()
        return TensorStoreSource(store, str(self), self.location())

    def open_group(self, zarr_format: int) -> UrlGroup:
        """The zarr group at this URL, created (with the container's root group) if missing."""
        group = self.location()
        for folder in (self.location(""), group):
            if zarr_format == 2 and folder.read(".zgroup") is None:
                folder.write(".zgroup", b'{"zarr_format": 2}')
            if zarr_format == 3 and folder.read("zarr.json") is None:
                folder.write(
                    "zarr.json",
                    json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode(),
                )
        return UrlGroup(
            JsonAttributes(
                group, *((".zattrs", None) if zarr_format == 2 else ("zarr.json", "attributes"))
            )
        )

    def create(
        self,
        shape: tuple[int, ...],
        dtype: np.dtype,
        chunks: tuple[int, ...],
        shards: tuple[int, ...] | None = None,
        dimension_names: tuple[str, ...] | None = None,
        options: OutputOptions | None = None,
    ) -> TensorStoreSource:
        """Create an empty (fill value 0) array with tensorstore alone: n5, zarr v2 inside a v2
        container, else zarr v3 (sharded when `shards` are given), with the codec of `options`
        (default: zstd as zarr-python writes it, gzip for n5) and its `write_empty_chunks`."""
        dtype, options = np.dtype(dtype), options or OutputOptions()
        if self.format == "n5":
            driver, metadata = (
                "n5",
                {
                    "dimensions": list(shape),
                    "blockSize": list(chunks),
                    "dataType": dtype.name,
                    "compression": options.n5_compression(),
                },
            )
        elif self.zarr_format() == 2:
            compressor = options.zarr_compressors(2)
            driver, metadata = (
                "zarr",
                {
                    "shape": list(shape),
                    "chunks": list(chunks),
                    "dtype": dtype.str,
                    "fill_value": 0,
                    "compressor": DEFAULT_CODECS[2] if compressor == "auto" else compressor,
                },
            )
        else:
            compressors = options.zarr_compressors(3)
            driver, metadata = (
                "zarr3",
                zarr3_metadata(
                    shape,
                    dtype,
                    chunks,
                    shards,
                    dimension_names,
                    DEFAULT_CODECS[3] if compressors == "auto" else compressors,
                ),
            )
            dataclasses.replace(self, key="").open_group(
                3
            )  # the container: a group zarr-python can open
        spec = self._spec(driver) | {
            "metadata": metadata,
            "store_data_equal_to_fill_value": options.write_empty_chunks,
        }
        return TensorStoreSource(ts.open(spec, create=True).result(), str(self), self.location())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer: the probe does not follow it (to another, maybe slow, host)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def check_answers(url: str, endpoint: str, where: str) -> None:
    """Refuse (StorageError naming `endpoint`) an endpoint that does not answer an unsigned HEAD
    of `url` within PROBE_TIMEOUT seconds: tensorstore's client would wait about 185 s (its
    retries of a 60 s low-speed timeout) on one that accepts connections and never answers.
    Any HTTP answer will do, an error status too; requests during a run keep their retries."""
    try:
        _head(url)
    except (OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            problem = f"did not answer within {PROBE_TIMEOUT:g} s"
        else:
            problem = f"cannot be reached ({type(reason).__name__}: {reason or 'no answer'})"
        raise StorageError(
            f"cannot reach {where}: the endpoint {endpoint} {problem}; check "
            "storage_options.endpoint_url (or AWS_ENDPOINT_URL) and the network"
        ) from None


@functools.lru_cache(maxsize=64)  # an endpoint that answered once is not asked again
def _head(url: str) -> None:
    """An unsigned HEAD of `url`; an HTTP error status is an answer too (tensorstore's signed
    requests say what it means), a redirect is not followed, a certificate not checked."""
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
    https = urllib.request.HTTPSHandler(context=unverified)
    opener = urllib.request.build_opener(_NoRedirect, https)
    try:
        opener.open(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT).close()
    except urllib.error.HTTPError:
        pass


@dataclass(frozen=True)
class UrlGroup:
    """A zarr group on object storage: its attributes, as a zarr.Group's `attrs` (a mapping
    with `update`)."""

    attrs: JsonAttributes


def zarr3_metadata(
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None,
    dimension_names: tuple[str, ...] | None,
    compressors: list[dict],
) -> dict:
    """zarr v3 metadata of a new array (C order, little endian, `compressors`)."""
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}, *compressors]
    if shards is not None:
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(chunks),
                    "codecs": codecs,
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                },
            }
        ]
    metadata = {
        "shape": list(shape),
        "data_type": np.dtype(dtype).name,
        "fill_value": 0,
        "codecs": codecs,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shards or chunks)}},
    }
    return metadata | ({"dimension_names": list(dimension_names)} if dimension_names else {})
