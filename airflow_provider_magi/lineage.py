"""OpenLineage for the two operators: what a video was made from, which prediction made it, and
where it landed.

Imported only by ``get_openlineage_facets_on_*``, which Airflow's OpenLineage provider calls when
it is installed (``pip install airflow-provider-magi[openlineage]``); without it nothing here is
ever imported. Datasets follow the conventions of Airflow's common-io provider: an
``ObjectStoragePath`` is ``namespace=path.namespace, name=path.key``; a local path counts as a
``file://`` path. Output URLs lose their query string (presigned URLs carry signatures there).
Nothing of the API key reaches a facet: the facets are built from ids, inputs and paths only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
from airflow.providers.common.compat.openlineage.facet import Dataset, ExternalQueryRunFacet, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

SOURCE = "wavespeed"


@attrs.define
class MagiPredictionRunFacet(RunFacet):
    """What one WaveSpeed prediction was asked to make, how long inference took, and what it
    cost (USD from WaveSpeed's billing records; None when not known yet)."""

    model: str
    prompt: str | None = None
    seed: int | None = None
    status: str | None = None
    inference_ms: int | None = None
    cost_usd: float | None = None

    @staticmethod
    def _get_schema() -> str:
        return "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_dataset(url: str) -> Dataset:
    """An http(s) URL as a dataset: ``https://host[:port]`` and the path, never the query.

    One dataset per file, however it was linked: a port that is the scheme's default is dropped
    (``https://h:443`` is ``https://h``), and so are path parameters (``;jsessionid=...``),
    which name a session, not the file, and may carry a credential.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port if parts.port != _DEFAULT_PORTS.get(scheme) else None
    netloc = f"{host}:{port}" if port else host
    path = "/".join(segment.split(";", 1)[0] for segment in (parts.path or "/").split("/"))
    return Dataset(namespace=f"{scheme}://{netloc}", name=path or "/")


def path_dataset(path: Any) -> Dataset:
    """An ObjectStoragePath (or a local path, as ``file://``) the way common-io names it."""
    from airflow.sdk import ObjectStoragePath

    if not hasattr(path, "fs"):
        path = ObjectStoragePath(f"file://{os.path.abspath(os.fspath(path))}")
    return Dataset(namespace=path.namespace, name=path.key)


def image_dataset(image: Any) -> Dataset | None:
    """The first frame as an input dataset, when it is an https URL or an object-storage path."""
    if isinstance(image, str):
        text = image.strip()
        if text.startswith("https://"):
            return url_dataset(text)
        if "://" in text:
            from airflow.sdk import ObjectStoragePath

            return path_dataset(ObjectStoragePath(text))
        return None
    if hasattr(image, "fs"):
        return path_dataset(image)
    return None


def generate_lineage(
    *,
    prediction_id: str | None,
    model: str,
    prompt: Any,
    seed: Any,
    image: Any,
    result: Mapping[str, Any] | None,
) -> OperatorLineage:
    """The generate task: the first frame in, the prediction's identity and inputs as run facets."""
    run_facets: dict[str, Any] = {}
    if prediction_id:
        run_facets["externalQuery"] = ExternalQueryRunFacet(externalQueryId=prediction_id, source=SOURCE)
    result = result or {}
    run_facets["magi_prediction"] = MagiPredictionRunFacet(
        model=str(result.get("model") or model),
        prompt=prompt if isinstance(prompt, str) else None,
        seed=_as_int(seed),
        status=result.get("status"),
        inference_ms=result.get("inference_ms"),
        cost_usd=result.get("cost_usd"),
    )
    image_input = _quietly(image_dataset, image)
    return OperatorLineage(inputs=[image_input] if image_input else [], run_facets=run_facets)


def download_lineage(
    *, prediction_id: str | None, output_urls: Iterable[str], written_paths: Iterable[Any]
) -> OperatorLineage:
    """The download task: the output URLs in, the final files (never a ``.part``) out."""
    run_facets: dict[str, Any] = {}
    if prediction_id:
        run_facets["externalQuery"] = ExternalQueryRunFacet(externalQueryId=prediction_id, source=SOURCE)
    return OperatorLineage(
        inputs=[url_dataset(url) for url in output_urls],
        outputs=[path_dataset(path) for path in written_paths],
        run_facets=run_facets,
    )


def folder_lineage(folder: Any) -> OperatorLineage:
    """A batch's lineage: the folder its videos and manifest land in (none before it is known)."""
    return OperatorLineage(outputs=[path_dataset(folder)] if folder is not None else [])


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _quietly(build: Any, value: Any) -> Any:
    """Lineage must never fail a task: an input it cannot name is left out."""
    try:
        return build(value)
    except (ValueError, TypeError, OSError):
        return None
