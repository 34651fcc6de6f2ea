"""`validate_ngff`: check an OME-Zarr group we wrote against ome-zarr-models (NGFF 0.4 and 0.5),
its `labels` group and every label image included, and that its metadata is strict JSON."""

from __future__ import annotations

import json
import os

import zarr


def strict_json(path: str) -> dict:
    """The JSON at `path`, refusing NaN and infinity (Python writes them; JSON has none)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    with open(path) as file:
        return json.load(file, parse_constant=refuse)


def group_attributes(path: str) -> dict:
    """A zarr group's attributes, read strictly: zarr v3 `zarr.json`, or zarr v2 `.zattrs`."""
    if os.path.exists(os.path.join(path, "zarr.json")):
        return strict_json(os.path.join(path, "zarr.json")).get("attributes", {})
    return strict_json(os.path.join(path, ".zattrs"))


def models(version: str) -> dict:
    """ome-zarr-models' Image, ImageLabel, Labels (and the v0.5 attribute model of `labels`)."""
    if version == "0.5":
        from ome_zarr_models.v05.image import Image
        from ome_zarr_models.v05.image_label import ImageLabel
        from ome_zarr_models.v05.labels import LabelsAttrs

        return {"Image": Image, "ImageLabel": ImageLabel, "LabelsAttrs": LabelsAttrs}
    from ome_zarr_models.v04.image import Image
    from ome_zarr_models.v04.image_label import ImageLabel
    from ome_zarr_models.v04.labels import Labels
    from pydantic_zarr.v2 import ArraySpec, GroupSpec

    # ome-zarr-models 1.6 under pydantic 2.14 leaves the v0.4 models' forward refs unresolved
    for model in (Image, ImageLabel, Labels):
        model.model_rebuild(_types_namespace={"ArraySpec": ArraySpec, "GroupSpec": GroupSpec})
    return {"Image": Image, "ImageLabel": ImageLabel, "Labels": Labels}


def validate_ngff(path: str) -> None:
    """Validate the OME-Zarr image or label image at `path` (metadata and arrays), then its
    `labels` group and each label image it lists; raise on anything invalid."""
    attributes = group_attributes(path)
    version = "0.5" if "ome" in attributes else "0.4"
    ome = attributes.get("ome", attributes)
    kinds = models(version)
    group = zarr.open_group(path, mode="r")
    if "image-label" in ome:
        kinds["ImageLabel"].from_zarr(group)
    elif version == "0.4":
        kinds["Image"].from_zarr(group)
    else:  # 1.6's v0.5 Image.from_zarr validates `labels` through a path that crashes on a
        # label without `colors` (optional in the spec): validate the image without that member
        from pydantic_zarr.v3 import GroupSpec

        spec = GroupSpec.from_zarr(group, depth=1)
        members = {name: member for name, member in spec.members.items() if name != "labels"}
        kinds["Image"](attributes=spec.attributes, members=members)
    if "labels" in group:
        labels_path = os.path.join(path, "labels")
        listed = group_attributes(labels_path)
        if version == "0.4":
            kinds["Labels"].from_zarr(group["labels"])
        else:
            kinds["LabelsAttrs"].model_validate(listed["ome"])
        for name in listed.get("ome", listed)["labels"]:
            validate_ngff(os.path.join(labels_path, name))
