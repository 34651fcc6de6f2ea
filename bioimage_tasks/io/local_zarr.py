"""zarr arrays and groups on local disk created, and group attributes updated, by writing their
metadata files directly instead of through zarr-python's calls, each of which crosses to its
event-loop thread and back (about 2 ms of CPU per array created, measured; a folder of small
images converted in one run pays it for every level of every file, issue 23).

The files are zarr-python's own: an array's metadata is a template that `zarr.create_array`
made once per layout in this process (its attributes replaced), serialised by zarr-python's
metadata classes; anything else (object storage, a missing parent group) goes through
zarr-python as before."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import OrderedDict
from typing import Any

import zarr
from zarr.core.array import Array, AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import AsyncGroup, Group, GroupMetadata
from zarr.storage import LocalStore, StorePath

TEMPLATES = 64  # array layouts remembered per process
_templates: OrderedDict[str, Any] = OrderedDict()
_encoded: OrderedDict[str, dict[str, bytes]] = OrderedDict()  # encoded_with's files, marked
_MARKER = f"bioimage-tasks-attribute-{uuid.uuid4().hex}-"
_lock = threading.Lock()


def write_metadata(folder: str, metadata: Any, files: dict[str, bytes] | None = None) -> None:
    """Write `metadata`'s files (zarr.json, or .zarray/.zgroup and .zattrs) into `folder`, each
    replaced whole, as zarr's LocalStore writes them (`files`: those files already encoded)."""
    os.makedirs(folder, exist_ok=True)
    for name, data in (files or encoded(metadata)).items():
        path = os.path.join(folder, name)
        temporary = f"{path}.{uuid.uuid4().hex}.partial"
        with open(temporary, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)


def encoded(metadata: Any) -> dict[str, bytes]:
    """`metadata`'s files as zarr-python serialises them."""
    buffers = metadata.to_buffer_dict(default_buffer_prototype())
    return {name: bytes(buffer.as_buffer_like()) for name, buffer in buffers.items()}


def encoded_with(template: Any, layout: str, attributes: dict[str, Any]) -> dict[str, bytes]:
    """The files of `template` with `attributes`, byte for byte as zarr-python writes them,
    without encoding each array's metadata again (zarr-python's indented JSON is encoded in
    Python): encoded once per layout and attribute names, each string value standing in as a
    marker, then the values put in place of the markers."""
    if not all(isinstance(value, str) for value in attributes.values()):
        return encoded(template.update_attributes(dict(attributes)))
    key = json.dumps([layout, list(attributes)])
    with _lock:
        files = _encoded.get(key)
    if files is None:
        markers = {name: f"{_MARKER}{i}" for i, name in enumerate(attributes)}
        files = encoded(template.update_attributes(markers) if markers else template)
        with _lock:
            _encoded[key] = files
            while len(_encoded) > TEMPLATES:
                _encoded.popitem(last=False)
    for index, value in enumerate(attributes.values()):
        marker, text = json.dumps(f"{_MARKER}{index}").encode(), json.dumps(value).encode()
        files = {name: data.replace(marker, text) for name, data in files.items()}
    return files


def parents_are_groups(container: str, key: str, zarr_format: int) -> bool:
    """Whether the container and every folder between it and `key` hold a group's metadata
    (zarr-python would otherwise create them)."""
    marker = "zarr.json" if zarr_format == 3 else ".zgroup"
    parts = [p for p in key.split("/") if p][:-1]
    folders = [os.path.join(container, *parts[:i]) for i in range(len(parts) + 1)]
    return all(os.path.isfile(os.path.join(folder, marker)) for folder in folders)


def create_array(container: str, key: str, attributes: dict[str, Any], **create: Any) -> Array:
    """`zarr.create_array(store=container, name=key, attributes=attributes, **create)` on local
    disk: the first array of a layout (`create`: shape, dtype, chunks, shards, compressors,
    fill_value, zarr_format, dimension_names) through zarr-python, later ones from its
    metadata with their own `attributes`, written directly."""
    zarr_format = create.get("zarr_format", 3)
    taken = _holds_metadata(os.path.join(container, key))  # zarr-python refuses to overwrite it
    if not key or taken or not parents_are_groups(container, key, zarr_format):
        return zarr.create_array(store=container, name=key or None, attributes=attributes, **create)
    layout = json.dumps(create, sort_keys=True, default=str)
    with _lock:
        template = _templates.get(layout)
        if template is not None:
            _templates.move_to_end(layout)
    if template is None:
        array = zarr.create_array(store=container, name=key, attributes=attributes, **create)
        with _lock:
            _templates[layout] = array.metadata
            while len(_templates) > TEMPLATES:
                _templates.popitem(last=False)
        return array
    metadata = template.update_attributes(dict(attributes))
    files = encoded_with(template, layout, attributes)
    write_metadata(os.path.join(container, key), metadata, files)
    return Array(AsyncArray(metadata=metadata, store_path=StorePath(LocalStore(container), key)))


def new_group(container: str, key: str, zarr_format: int) -> Group | None:
    """A new, empty group at `key` of a local container, written directly; None when it exists
    already or its parents are not all groups (open it with zarr-python then)."""
    folder = os.path.join(container, key)
    if _holds_metadata(folder):
        return None
    if key and not parents_are_groups(container, key, zarr_format):
        return None
    metadata = GroupMetadata(zarr_format=zarr_format)
    write_metadata(folder, metadata, encoded_with(metadata, f"group v{zarr_format}", {}))
    return Group(AsyncGroup(metadata=metadata, store_path=StorePath(LocalStore(container), key)))


def _holds_metadata(folder: str) -> bool:
    """Whether `folder` holds a zarr array's or group's metadata."""
    return any(os.path.exists(os.path.join(folder, m)) for m in ("zarr.json", ".zgroup", ".zarray"))


def update_attributes(group: Any, attributes: dict[str, Any]) -> None:
    """`group.attrs.update(attributes)`, written directly for a zarr group on local disk."""
    store = getattr(getattr(group, "store_path", None), "store", None)
    if not isinstance(group, Group) or not isinstance(store, LocalStore) or store.read_only:
        group.attrs.update(attributes)
        return
    group.metadata.attributes.update(attributes)  # in place, as zarr-python's update does
    write_metadata(os.path.join(str(store.root), group.store_path.path), group.metadata)
