"""MagiDownloadOutputsOperator: land a prediction's videos where the next task or DAG needs them."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_magi.compat import BaseOperator
from airflow_provider_magi.exceptions import MagiError, MagiInputError, MagiPredictionFailedError
from airflow_provider_magi.task_mixin import MagiTaskMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.downloads import WritablePath

NsfwPolicy = Literal["keep", "skip", "fail"]
NSFW_POLICIES = ("keep", "skip", "fail")
DEFAULT_FILENAME = "{dag_id}/{run_id}/{prediction_id}_{index}.mp4"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FIELDS = ("dag_id", "task_id", "run_id", "map_index", "prediction_id", "index", "ds")


def shorten(value: Any) -> str:
    """validation.shorten, imported only when an error is worded: a DAG file's parse does not load
    the validation module (tests/test_parse_imports.py)."""
    from airflow_provider_magi.validation import shorten

    return shorten(value)


def safe_segment(value: Any) -> str:
    """A path segment that cannot climb out of the destination or carry control characters."""
    text = _UNSAFE.sub("_", str(value)).strip("._")
    return text or "_"


def check_filename_fields(pattern: Any) -> None:
    """Refuse unknown ``{fields}`` when the DAG is parsed, not after a video was paid for.

    Jinja's ``{{ ... }}`` reads as literal braces here, so a templated pattern checks the same way.
    """
    if not isinstance(pattern, str):
        raise MagiInputError(f"Invalid filename: {shorten(pattern)}. Fix: pass a string pattern")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as error:
        raise MagiInputError(f"Invalid filename: {shorten(pattern)} ({error})") from None
    for name in names:
        field = name.split(".")[0].split("[")[0]
        if field not in _FIELDS:
            import difflib  # only to word this error: not loaded by a parse that passes

            close = difflib.get_close_matches(field, _FIELDS, n=1)
            hint = f"did you mean {{{close[0]}}}? " if close else ""
            raise MagiInputError(
                f"Invalid filename: {shorten(pattern)} uses an unknown field {{{field}}}. "
                f"Fix: {hint}use only {{{'}, {'.join(_FIELDS)}}}"
            )


# What to install for each object-storage scheme: the Airflow provider that registers it, with
# the fsspec package it needs.
_SCHEME_PACKAGES = {
    "s3": "apache-airflow-providers-amazon[s3fs]",
    "s3a": "apache-airflow-providers-amazon[s3fs]",
    "gs": "apache-airflow-providers-google",
    "gcs": "apache-airflow-providers-google",
    "abfs": "apache-airflow-providers-microsoft-azure",
    "abfss": "apache-airflow-providers-microsoft-azure",
    "az": "apache-airflow-providers-microsoft-azure",
    "adl": "apache-airflow-providers-microsoft-azure",
}


def check_destination_scheme(destination: Any, *, run_time: bool = False) -> None:
    """A destination URL whose filesystem this installation cannot open is refused at parse time,
    naming what to install: found at download time, it would fail after the video was paid for.

    ``run_time``: the task is about to write (nothing paid yet). Then Airflow's own registry is
    asked too: fsspec knows ``memory://``, but Airflow opens only the schemes its providers
    register or that were ``attach()``ed, and fails with a bare ValueError at the first write.
    A parse does not ask it (loading every provider's filesystem module costs each parse, and a
    DAG may attach its filesystem later, where the task runs).
    """
    if not isinstance(destination, str) or "://" not in destination or "{{" in destination:
        return  # a path, an ObjectStoragePath, or a template: checked when it is rendered
    scheme = destination.split("://", 1)[0].lower()
    if scheme in ("file", "local"):
        return  # built into Airflow
    import fsspec  # Airflow's object storage is fsspec underneath: its registry knows every scheme

    try:
        fsspec.get_filesystem_class(scheme)
        missing = False
    except (ImportError, ValueError):
        missing = True
    package = _SCHEME_PACKAGES.get(scheme, f"the Airflow provider or fsspec package for {scheme}://")
    if missing:
        raise MagiInputError(
            f"Invalid destination: {shorten(destination)}: no filesystem for {scheme}:// is installed. "
            f"Fix: pip install {package!r} on every worker (or attach() a filesystem for it)."
        )
    if run_time:
        from airflow_provider_magi.compat import airflow_filesystem_known

        if airflow_filesystem_known(scheme) is False:
            raise MagiInputError(
                f"Invalid destination: {shorten(destination)}: no filesystem for {scheme}:// is "
                f"registered with Airflow (fsspec has one, but Airflow's ObjectStoragePath opens only "
                "the schemes its installed providers register, and those attach()ed). Fix: pip install "
                f"{package!r} on every worker, or attach one where the task runs, e.g. "
                f"airflow.sdk.io.attach(protocol={scheme!r}, fs=fsspec.filesystem({scheme!r}))."
            )


def filename_values(context: Mapping[str, Any], prediction_id: str, index: int) -> dict[str, Any]:
    """The fields a filename pattern may use, for one output of one prediction in this task."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": ti.map_index,
        "ds": context.get("ds", ""),
        "prediction_id": prediction_id,
        "index": index,
    }


def render_filename(pattern: str, values: Mapping[str, Any]) -> str:
    """Fill ``pattern`` with sanitised values; the pattern's own slashes make directories."""
    try:
        rendered = pattern.format(**{key: safe_segment(value) for key, value in values.items()})
    except (KeyError, IndexError, ValueError) as error:
        raise MagiInputError(
            f"Invalid filename: {shorten(pattern)} uses an unknown field ({error}). "
            f"Fix: use only {{{'}, {'.join(_FIELDS)}}}"
        ) from None
    parts = [part for part in rendered.split("/") if part not in ("", ".")]
    if not parts or any(part == ".." for part in parts):
        raise MagiInputError(
            f"Invalid filename: {shorten(pattern)} renders to {rendered!r}. "
            "Fix: use a relative path without '..'"
        )
    return "/".join(parts)


class MagiDownloadOutputsOperator(MagiTaskMixin, BaseOperator):
    """Stream a completed prediction's outputs to a directory, atomically, and emit asset events.

    The prediction is read again first, for fresh output URLs. Each file is written under a
    temporary name and moved into place only when its byte count matches, so readers never see a
    partial video.

    :param prediction: A prediction id, or the result dict of ``MagiGenerateVideoOperator``.
        Templated; usually ``"{{ ti.xcom_pull(task_ids='generate', key='prediction_id') }}"``.
    :param destination: Directory: a local path, or an object-storage URL (``file://``,
        ``s3://``, ``gs://``, ``memory://`` ...), or an ``ObjectStoragePath``. Templated.
    :param filename: Pattern below ``destination``; fields ``{dag_id}``, ``{task_id}``,
        ``{run_id}``, ``{map_index}``, ``{ds}``, ``{prediction_id}``, ``{index}``. Templated.
    :param nsfw_policy: What a flagged output does: ``keep`` (warn), ``skip`` or ``fail``.
    :param checksum: Also compute each file's SHA-256.
    :param allow_insecure_loopback: Accept plain-http output URLs on a loopback host. Default
        ``None``: only when the connection itself points at plain http on loopback (the bundled
        local server). Other non-https URLs are always refused.
    :param magi_conn_id: Airflow connection of type ``magi``. Templated.
    """

    template_fields: Sequence[str] = ("prediction", "destination", "filename", "magi_conn_id")
    ui_color = "#e8f0ff"

    def __init__(
        self,
        *,
        prediction: str | Mapping[str, Any],
        destination: Any,
        filename: str = DEFAULT_FILENAME,
        nsfw_policy: NsfwPolicy = "keep",
        checksum: bool = False,
        allow_insecure_loopback: bool | None = None,
        magi_conn_id: str = "magi_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if nsfw_policy not in NSFW_POLICIES:
            raise ValueError(f"nsfw_policy must be one of {NSFW_POLICIES}, got {nsfw_policy!r}")
        check_filename_fields(filename)
        check_destination_scheme(destination)
        self.prediction = prediction
        self.destination = destination
        self.filename = filename
        self.nsfw_policy = nsfw_policy
        self.checksum = checksum
        self.allow_insecure_loopback = allow_insecure_loopback
        self.magi_conn_id = magi_conn_id
        self._lineage_urls: list[str] = []
        self._lineage_paths: list[Any] = []
        self._cost: float | None = None

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_magi.validation import check_prediction_id

        prediction_id = check_prediction_id(self.prediction)
        self.magi_prediction_id = prediction_id
        directory = destination_path(self.destination)
        prediction = self.hook.get_prediction(prediction_id)
        if not prediction.is_completed:
            if prediction.is_failed:
                raise MagiPredictionFailedError(
                    f"Prediction {prediction_id} {prediction.status}: {prediction.error}",
                    prediction_id=prediction_id,
                )
            raise MagiError(
                f"Prediction {prediction_id} is {prediction.status}, not completed: wait for it "
                "first (MagiGenerateVideoOperator or MagiPredictionSensor)",
                prediction_id=prediction_id,
            )
        wanted = [
            (index, url) for index, url in enumerate(prediction.outputs) if self._wanted(prediction, index)
        ]
        targets = self._targets(context, prediction, [index for index, _ in wanted], directory)
        written = [
            self._download(prediction, index, url, target)
            for (index, url), target in zip(wanted, targets, strict=True)
        ]
        self._cost = self._upstream_cost(prediction)
        self._emit_asset_events(context, prediction, written)
        return written

    def _upstream_cost(self, prediction: Prediction) -> float | None:
        """What the prediction cost: the upstream result's ``cost_usd``, else the price an
        earlier task counted, else its billing now, counted in the metrics here. A price billed
        only after the generating task ended (billing lags completion) is so counted once, by
        the first download that sees it billed."""
        given = self.prediction.get("cost_usd") if isinstance(self.prediction, Mapping) else None
        if given is not None:
            return float(given)
        return self._count_cost(prediction.id, prediction.model, counted_only=True)

    def _wanted(self, prediction: Prediction, index: int) -> bool:
        flags = prediction.has_nsfw_contents
        flagged = index < len(flags) and flags[index]
        if not flagged:
            return True
        message = f"Prediction {prediction.id} output {index} is flagged NSFW"
        if self.nsfw_policy == "fail":
            raise MagiPredictionFailedError(f"{message} (nsfw_policy='fail')", prediction_id=prediction.id)
        if self.nsfw_policy == "skip":
            self.log.warning("%s: not downloaded (nsfw_policy='skip')", message)
            return False
        self.log.warning("%s: downloaded anyway (nsfw_policy='keep')", message)
        return True

    def _targets(
        self, context: Context, prediction: Prediction, indexes: list[int], directory: WritablePath
    ) -> list[WritablePath]:
        """Every output's path, refused before anything is written if two would share one
        (:func:`airflow_provider_magi.paying.claims.refuse_shared_paths`), or if another task
        instance wrote or claimed it (another run of a ``{ds}`` name, say): each path is claimed
        (:func:`~airflow_provider_magi.paying.claims.claim`), as the long video and batch claim theirs."""
        from airflow_provider_magi.paying.claims import (
            claim,
            marker_of,
            refuse_shared_paths,
            release,
            writer_of,
        )

        names = [
            render_filename(self.filename, filename_values(context, prediction.id, index))
            for index in indexes
        ]
        refuse_shared_paths(
            names,
            pattern=self.filename,
            items=f"the {len(names)} outputs of prediction {prediction.id}",
            fix="put {index} in the pattern, e.g. 'daily/{ds}_{index}.mp4'",
            prediction_id=prediction.id,
        )
        targets = [directory / name for name in names]
        fresh = [target for target in targets if not marker_of(target).exists()]
        try:
            for target in targets:
                claim(
                    target,
                    writer_of(context),
                    what="the video",
                    fix="put {run_id} or {prediction_id} in filename (the default has both)",
                    # A path named after the prediction is this prediction's own output (written
                    # by a version without markers), whoever's marker is missing.
                    adopt_unmarked="{prediction_id" in self.filename,
                    paid=True,
                )
        except MagiInputError:
            for target in fresh:  # no claim is left for a file this task will not write
                release(target, writer_of(context))
            raise
        return targets

    def _download(self, prediction: Prediction, index: int, url: str, target: WritablePath) -> dict[str, Any]:
        self._lineage_urls.append(url)
        allow_loopback = self.allow_insecure_loopback
        if allow_loopback is None:
            allow_loopback = self.hook.is_local_server
        downloaded = self.hook.download_output(
            url,
            target,
            checksum=self.checksum,
            allow_insecure_loopback=allow_loopback,
            label=f"Prediction {prediction.id} output {index}",
        )
        self.log.info("Wrote %s (%d bytes)", downloaded.path, downloaded.size)
        self._lineage_paths.append(target)
        flags = prediction.has_nsfw_contents
        return {
            **downloaded.to_dict(),
            "index": index,
            "prediction_id": prediction.id,
            "nsfw": bool(index < len(flags) and flags[index]),
        }

    def _emit_asset_events(
        self, context: Context, prediction: Prediction, written: list[dict[str, Any]]
    ) -> None:
        if not self.outlets:
            return
        extra: dict[str, Any] = {
            "prediction_id": prediction.id,
            "model": prediction.model,
            "inference_ms": prediction.inference_ms,
            "paths": [item["path"] for item in written],
            "sizes": [item["size"] for item in written],
        }
        # The generate task's result dict carries what was asked for; a bare id does not.
        if isinstance(self.prediction, Mapping):
            inputs = self.prediction.get("inputs") or {}
            extra.update({key: inputs[key] for key in ("prompt", "seed", "image") if key in inputs})
        extra["cost_usd"] = self._cost
        self._add_asset_extra(context, extra)

    # OpenLineage (provider optional): the output URLs in, the final files out.
    def _lineage(self) -> Any:
        from airflow_provider_magi.lineage import download_lineage

        return download_lineage(
            prediction_id=self.magi_prediction_id,
            output_urls=self._lineage_urls,
            written_paths=self._lineage_paths,
        )


def destination_path(destination: Any) -> WritablePath:
    """A directory to write into: ObjectStoragePath for URLs, pathlib.Path for plain paths.

    The rendered URL's filesystem is checked here, before anything is paid or fetched: fsspec
    would only fail at the first write ("Install s3fs to access S3"), after the video was paid
    for and without naming the package Airflow needs.
    """
    protocol = getattr(destination, "protocol", None)  # an ObjectStoragePath (reading .fs would
    if protocol is not None:  # already fail, with fsspec's words, for a missing package)
        scheme = protocol[0] if isinstance(protocol, (tuple, list)) and protocol else protocol
        if isinstance(scheme, str) and scheme not in ("file", "local"):
            check_destination_scheme(f"{scheme}://{getattr(destination, 'path', '')}", run_time=True)
        return destination
    if isinstance(destination, Path):
        return destination
    if not isinstance(destination, str) or not destination.strip():
        raise MagiInputError(
            f"Invalid destination: {shorten(destination)}. Fix: pass a directory path or a URL "
            "such as 's3://bucket/videos' or 'file:///data/videos'"
        )
    if "://" in destination:
        from airflow.sdk import ObjectStoragePath

        check_destination_scheme(destination, run_time=True)

        return ObjectStoragePath(destination)
    return Path(destination).expanduser()
