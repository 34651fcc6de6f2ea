"""`OutputOptions`: how a run stores what it writes. The codec, its level and zarr v3 shards are
metadata, chosen when an output is created (an existing output must already match what is asked);
`write_empty_chunks` is how every write of the run treats chunks that hold only the fill value.

One frozen dataclass flow parameter, like `RunnerConfig`: from a deployment or the API it arrives
as JSON (a dict), which `check_output_options` turns back into the dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from bioimage_tasks.errors import ParameterError

Codec = Literal["zstd", "blosc-lz4", "gzip"]
# codec: (lowest, highest, default) level; blosc-lz4 is blosc with lz4 and byte shuffle
LEVELS: dict[str, tuple[int, int, int]] = {
    "zstd": (1, 22, 3),
    "blosc-lz4": (1, 9, 5),
    "gzip": (1, 9, 6),
}


@dataclass(frozen=True)
class OutputOptions:
    """How the outputs a run creates are stored: compression, zarr v3 shards, empty chunks.

    The `output_options` parameter of `downsample`, `copy`, `pyramid` and their flows (a dict
    of these fields will do). An existing output must already be stored this way. Every field
    is checked when the options are made (`ValueError` naming `output_options.<field>`).

    Attributes
    ----------
    codec : {"zstd", "blosc-lz4", "gzip"} or None, default None
        The compressor (blosc-lz4: blosc with lz4 and byte shuffle). None: today's codecs,
        zarr's zstd for zarr v2 and v3, gzip for n5.
    level : int or None, default None
        The codec's level: zstd 1-22, blosc-lz4 1-9, gzip 1-9; needs `codec`. None: the
        codec's usual default (zstd 3, blosc-lz4 5, gzip 6).
    shards : tuple of int or None, default None
        Shard shape, one int >= 1 per axis (zarr v3 only): few large files holding chunks of
        about 64**3 voxels that divide the shards and `block_shape`. None: no shards.
    write_empty_chunks : bool, default False
        Store chunks equal to the fill value (0) too. False leaves them out (and deletes one a
        write makes all-fill), as zarr and tensorstore do.

    Examples
    --------
    >>> from bioimage_tasks import OutputOptions
    >>> OutputOptions(codec="zstd", level=5, shards=[128, 128, 128]).shards
    (128, 128, 128)
    """

    codec: Codec | None = None
    level: int | None = None
    shards: tuple[int, ...] | None = None
    write_empty_chunks: bool = False

    def __post_init__(self) -> None:
        if self.codec is not None and self.codec not in LEVELS:
            raise ParameterError(
                f"output_options.codec must be one of {tuple(LEVELS)} or None, got {self.codec!r}"
            )
        if self.level is not None:
            if self.codec is None:
                raise ParameterError("output_options.level needs a codec (zstd, blosc-lz4 or gzip)")
            low, high, _ = LEVELS[self.codec]
            if not _is_int(self.level) or not low <= self.level <= high:
                raise ParameterError(
                    f"output_options.level for {self.codec} must be an integer in [{low}, {high}], "
                    f"got {self.level!r}"
                )
        if self.shards is not None:
            try:
                shards = () if isinstance(self.shards, (str, bytes)) else tuple(self.shards)
            except TypeError:  # a bare number: which axes it meant is unknown here
                shards = ()
            if not shards or not all(_is_int(s) and s >= 1 for s in shards):
                raise ParameterError(
                    "output_options.shards must be positive integers, one per axis, got "
                    f"{self.shards!r}"
                )
            object.__setattr__(
                self, "shards", tuple(int(s) for s in shards)
            )  # a JSON list becomes a tuple
        if not isinstance(self.write_empty_chunks, (bool, np.bool_)):
            raise ParameterError(
                "output_options.write_empty_chunks must be True or False, got "
                f"{self.write_empty_chunks!r}"
            )
        object.__setattr__(self, "write_empty_chunks", bool(self.write_empty_chunks))

    @property
    def effective_level(self) -> int | None:
        """The level a new output gets: the given one, or the codec's default."""
        return (
            None
            if self.codec is None
            else self.level
            if self.level is not None
            else LEVELS[self.codec][2]
        )

    @property
    def changes_layout(self) -> bool:
        """Whether a codec or shards are asked for (metadata of the output, not how it is
        written)."""
        return self.codec is not None or self.shards is not None

    def check_shards(self, ndim: int, kind: str) -> None:
        """Shards need zarr v3 (`kind` is "zarr v3", "zarr v2" or "n5") and one entry per axis."""
        if self.shards is None:
            return
        if kind != "zarr v3":
            raise ParameterError(
                f"output_options.shards need a zarr v3 output; a new {kind} output has no shards"
            )
        if len(self.shards) != ndim:
            raise ParameterError(
                f"output_options.shards must have one entry per axis ({ndim}), got {self.shards}"
            )

    def zarr_compressors(self, zarr_format: int) -> Any:
        """`compressors` for `zarr.create_array`: "auto" (zarr's default) without a codec."""
        if self.codec is None:
            return "auto"
        level = self.effective_level
        if zarr_format == 2:
            return {
                "zstd": {"id": "zstd", "level": level},
                "gzip": {"id": "gzip", "level": level},
                "blosc-lz4": {"id": "blosc", "cname": "lz4", "clevel": level, "shuffle": 1},
            }[self.codec]
        return [
            {
                "zstd": {"name": "zstd", "configuration": {"level": level, "checksum": False}},
                "gzip": {"name": "gzip", "configuration": {"level": level}},
                "blosc-lz4": {
                    "name": "blosc",
                    "configuration": {"cname": "lz4", "clevel": level, "shuffle": "shuffle"},
                },
            }[self.codec]
        ]

    def n5_compression(self) -> dict:
        """The n5 `compression` metadata (tensorstore's n5 driver): gzip without a codec."""
        level = self.effective_level
        return {
            None: {"type": "gzip"},
            "zstd": {"type": "zstd", "level": level},
            "gzip": {"type": "gzip", "level": level},
            "blosc-lz4": {"type": "blosc", "cname": "lz4", "clevel": level, "shuffle": 1},
        }[self.codec]

    def describe(self) -> str:
        """'zstd level 5, shards (128, 128, 128), empty chunks stored', for summaries."""
        parts = [f"{self.codec} level {self.effective_level}" if self.codec else "default codec"]
        parts += [f"shards {self.shards}"] if self.shards else []
        parts += ["empty chunks stored" if self.write_empty_chunks else "empty chunks not stored"]
        return ", ".join(parts)

    def fingerprint(self) -> dict:
        """What of these options a run key must hold: only `write_empty_chunks` changes what a
        rerun into the same output writes (codec and shards are fixed when it is created), and
        only when True, so runs with default options keep the keys they had before."""
        return {"write_empty_chunks": True} if self.write_empty_chunks else {}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_output_options(value: OutputOptions | dict | None) -> OutputOptions:
    """The flow parameter as OutputOptions: None is the defaults, a dict (JSON from a deployment
    or the API) its fields; anything else is a ValueError."""
    if value is None:
        return OutputOptions()
    if isinstance(value, dict):
        unknown = set(value) - {f.name for f in fields(OutputOptions)}
        if unknown:
            raise ParameterError(
                f"output_options has no field(s) {sorted(unknown)}; it takes "
                f"{[f.name for f in fields(OutputOptions)]}"
            )
        return OutputOptions(**value)
    if not isinstance(value, OutputOptions):
        raise ParameterError(
            f"output_options must be an OutputOptions (or a dict of its fields), got {value!r}"
        )
    return value


def stored_codec(metadata: dict) -> tuple[str, int | None]:
    """(codec, level) of an array's metadata: zarr v3 `codecs` (inside a shard too), zarr v2
    `compressor` or n5 `compression`. Codecs we do not create are named as stored."""
    if "codecs" in metadata:
        codecs = metadata["codecs"]
        while codecs and codecs[0].get("name") == "sharding_indexed":
            codecs = codecs[0]["configuration"]["codecs"]
        compressors = [c for c in codecs if c.get("name") not in ("bytes", "transpose", "crc32c")]
        if not compressors:
            return "none", None
        name, config = compressors[-1]["name"], compressors[-1].get("configuration", {})
    else:
        config = metadata.get("compressor", metadata.get("compression"))
        if config is None or config.get("type") == "raw":
            return "none", None
        name = config.get("id", config.get("type"))
    if name == "blosc":
        shuffled = config.get("shuffle") in (1, "shuffle")
        return (
            f"blosc-{config.get('cname')}"
            + ("" if shuffled else f"-shuffle-{config.get('shuffle')}"),
            config.get("clevel"),
        )
    return name, config.get("level")


def check_existing(
    options: OutputOptions, metadata: dict, shards: tuple[int, ...] | None, name: str
) -> None:
    """Refuse an existing output (`metadata` as in `stored_codec`, its `shards` or None) whose
    codec, level or shards differ from those `options` name; what they leave open is not checked."""
    codec, level = stored_codec(metadata)
    if options.codec is not None and (codec != options.codec or options.level not in (None, level)):
        asked = options.codec + (f" level {options.level}" if options.level is not None else "")
        raise ParameterError(
            f"output {name} exists with codec {codec} level {level}; output_options ask for "
            f"{asked}: options apply to new outputs, so write elsewhere or delete it"
        )
    if options.shards is not None and tuple(shards or ()) != options.shards:
        raise ParameterError(
            f"output {name} exists with shards {shards}; output_options ask for {options.shards}: "
            "options apply to new outputs, so write elsewhere or delete it"
        )
