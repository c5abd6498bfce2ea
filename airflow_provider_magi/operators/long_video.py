"""MagiLongVideoOperator: a list of scenes becomes one continuous video, the MAGI way.

MAGI-1 continues a video from a first frame, so a long video is a chain: scene k+1 is an
image-to-video prediction whose first frame is the **last frame of scene k's clip**, decoded and
uploaded losslessly (PNG, through the two-step upload). The clips are then joined into one MP4
(``airflow_provider_magi.media``; the seam's repeated frame is dropped by default, see there).

Each scene is paid for exactly once. A scene is the generate operator's own steps (ledger intent
-> submit -> ledger id -> wait), on a ledger record of its own, ``scene-<k>``, whose inputs
fingerprint holds the model, that scene's prompt, seed and extra inputs, and - for k > 1 - the
previous scene's prediction id as its first-frame source. So editing scene k's prompt and
clearing the task regenerates scene k and every scene after it (their first frames change), and
only those; a retry, a killed worker or a clear resumes at the first scene not completed, and
completed scenes' clips are downloaded again from their outputs (or read from kept segments).

Waiting holds no worker: each scene defers to ``MagiPredictionTrigger``, and the resumed task
walks the scenes again from the ledger (one status read per completed scene), downloads the
clip it needs for the next first frame, submits the next scene and defers again.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_magi.api import DEFAULT_MODEL, Prediction, final_result
from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.operators.download import (
    check_filename_fields,
    destination_path,
    filename_values,
    render_filename,
)
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator
from airflow_provider_magi.scenes import scene_inputs, scene_model
from airflow_provider_magi.waiting import DEFAULT_POLL_INTERVAL, MAX_POLL_INTERVAL

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_magi.downloads import WritablePath
    from airflow_provider_magi.ledger import Ledger
    from airflow_provider_magi.scene_clips import SceneClips
    from airflow_provider_magi.scenes import Scene

# The costs and validation modules load when the task runs, not when a DAG file is parsed.

XCOM_SCENES_DONE = "scenes_done"
DEFAULT_FILENAME = "{dag_id}/{run_id}/{task_id}.mp4"
# What the default becomes in a mapped task: each map index its own file, never one for all.
MAPPED_DEFAULT_FILENAME = "{dag_id}/{run_id}/{task_id}_{map_index}.mp4"


class MagiLongVideoOperator(MagiGenerateVideoOperator):
    """Generate scene after scene, each starting from the last frame of the one before, and
    join them into one MP4 at ``destination``.

    A subclass of the generate operator so that each scene runs exactly its never-pay-twice
    steps (resume, history look-up, submit, ledger), not a copy of them.

    :param scenes: The scenes in order: prompts, or dicts with ``prompt`` and optional ``seed``
        and ``extra_inputs``. Templated.
    :param image: Scene 1's first frame (as the generate operator takes it); later scenes start
        from the previous scene's last frame. Templated.
    :param destination: Directory for the video, as the download operator takes it. Templated.
    :param filename: Pattern below ``destination``; fields ``{dag_id}``, ``{task_id}``,
        ``{run_id}``, ``{map_index}``, ``{ds}``, ``{prediction_id}`` (the last scene's). Templated.
    :param keep_segments: Also keep each scene's clip beside the video, as
        ``<name>.scene-<k>.<prediction id>.mp4`` (a retry then reads them instead of downloading).
    :param drop_seam_frames: Drop the first frame of every later scene (it repeats the previous
        scene's last frame); this re-encodes the join. False keeps it, and clips whose streams
        match are then joined losslessly, without re-encoding.
    :param deferrable: Wait in the triggerer (the default: a long video waits for many scenes,
        and no worker slot should be held for that).
    :param timeout: How long to wait for each scene (fails without retrying).
        ``execution_timeout`` bounds the whole try, counted from its first ``execute`` across every
        scene's deferral, and is retried (the retry reuses the paid scenes).

    The other parameters (``model``, ``magi_conn_id``, ``deferrable``, ``poll_interval``,
    ``max_poll_interval``, ``attach_to_single_candidate``) are the generate operator's.
    Needs the ``[video]`` extra on the workers: ``pip install "airflow-provider-magi[video]"``.
    """

    template_fields: Sequence[str] = ("scenes", "image", "destination", "filename", "model", "magi_conn_id")
    template_fields_renderers = {"scenes": "json"}
    rendered_inputs: tuple[str, ...] = ("scenes", "image")
    ui_color = "#ede4ff"

    def __init__(
        self,
        *,
        scenes: Any,
        destination: Any,
        image: Any = None,
        filename: str = DEFAULT_FILENAME,
        model: str = DEFAULT_MODEL,
        magi_conn_id: str = "magi_default",
        deferrable: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = MAX_POLL_INTERVAL,
        timeout: float | timedelta | None = timedelta(hours=2),
        keep_segments: bool = False,
        drop_seam_frames: bool = True,
        attach_to_single_candidate: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            prompt="",  # each scene has its own
            image=image,
            model=model,
            magi_conn_id=magi_conn_id,
            deferrable=deferrable,
            poll_interval=poll_interval,
            max_poll_interval=max_poll_interval,
            timeout=timeout,
            attach_to_single_candidate=attach_to_single_candidate,
            **kwargs,
        )
        check_filename_fields(filename)  # a typo fails when the DAG is parsed, not after paying
        self.scenes = scenes
        self.destination = destination
        self.filename = filename
        self.keep_segments = keep_segments
        self.drop_seam_frames = drop_seam_frames
        self._scene_number = 0
        self._remaining = 1  # scenes still to pay for, the next one included (for the guards)
        self._paid: str | None = None  # the scenes already paid, named by a guard's refusal
        self._written: list[Any] = []
        self._clips: SceneClips | None = None
        # The prediction this try deferred for, when resumed with its event (None: a fresh start,
        # or an event from an earlier try): scenes up to it were met by this try already.
        self._resumed_for: str | None = None

    # ------------------------------------------------------------ the chain

    def execute(self, context: Context) -> Any:
        """Walk the scenes from the ledger: reuse what is paid, submit the first one missing."""
        from airflow_provider_magi.hooks.magi import model_path
        from airflow_provider_magi.ledger_stores import open_ledger
        from airflow_provider_magi.media import require_av
        from airflow_provider_magi.paying.deadline import start_clock
        from airflow_provider_magi.scene_clips import SceneClips
        from airflow_provider_magi.scenes import parse_scenes

        start_clock(self, context)  # execution_timeout counts from the try's first entry, across scenes
        require_av()  # before anything is paid: without it no scene could be chained or joined
        self._check_scenes(parse_scenes(self.scenes))  # bad input is refused before the ledger is read
        # every scene as this try first rendered it (paying.rendering)
        self._one_rendering(context, resuming=self._resuming)
        scenes = self._scenes = parse_scenes(self.scenes)
        self._check_scenes(scenes)  # every scene, before the first one is paid
        model_path(self.model)
        directory = destination_path(self.destination)  # its filesystem too, before paying
        self._target_values(context, "check")  # a bad filename fails now, not after paying
        self._claim(context, directory)  # another task instance's video is never replaced
        self._webhook_url = None
        ledger = open_ledger(context, ledger_path=self.hook.settings.ledger_path)
        work = Path(tempfile.mkdtemp(prefix="magi-long-video-"))
        self._clips = clips = SceneClips(self.hook, work)
        try:
            done: list[Prediction] = []
            for number, scene in enumerate(scenes, 1):
                done.append(self._scene(context, ledger, number, len(scenes), scene, done, clips, directory))
                context["ti"].xcom_push(
                    key=XCOM_SCENES_DONE,
                    value=[{"scene": k, "prediction_id": p.id} for k, p in enumerate(done, 1)],
                )
            return self._join(context, done, clips, directory)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _check_scenes(self, scenes: list[Scene]) -> None:
        """Every scene's inputs, checked against its model before anything is paid: a bad scene
        4 must not be found after scenes 1 to 3 were paid for. The error names the scene."""
        for number, scene in enumerate(scenes, 1):
            try:
                self._scene_inputs(number, scene)
            except MagiInputError as error:
                raise MagiInputError(
                    f"Scene {number} of {len(scenes)}: {error} (every scene is checked before any "
                    "is paid for)"
                ) from None

    def _scene_model(self, number: int) -> str:
        return scene_model(self.model, number)

    def _scene_inputs(self, number: int, scene: Scene) -> dict[str, Any]:
        return scene_inputs(self.model, self.image, number, scene)

    def _still_to_pay(self) -> dict[str, Any]:
        """Every scene still to pay for, not only the next one: a budget that holds 2 of 4 scenes
        refuses before scene 1, instead of paying for half a video. Their prices, and those of
        the scenes already paid, when the catalogue knows them (MAGI-2: per second)."""
        from airflow_provider_magi.model_inputs import price_of

        def price(number: int, scene: Scene) -> float | None:
            return price_of(self._scene_model(number), self._scene_inputs(number, scene))

        first = self._scene_number
        prices = [price(k, scene) for k, scene in enumerate(self._scenes[first - 1 :], first)]
        done = zip(self._done, self._scenes[: len(self._done)], strict=True)
        paid = {p.id: price(k, scene) for k, (p, scene) in enumerate(done, 1)}
        return {
            "count": self._remaining,
            "paid": self._paid,
            "prices": () if None in prices else tuple(p for p in prices if p is not None),
            "own_prices": {pid: cost for pid, cost in paid.items() if cost is not None},
        }

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """A scene finished in the triggerer (or failed: that raises): carry on with the chain."""
        if not self.event_from_an_earlier_try(event, context):  # Airflow 3.0: else start afresh
            self.result_from_trigger(event)
            self._resumed_for = str((event or {}).get("prediction_id") or "") or None
            self._resuming = True
        return self.execute(context)

    def _scene(
        self,
        context: Context,
        ledger: Ledger,
        number: int,
        total: int,
        scene: Scene,
        done: list[Prediction],
        clips: SceneClips,
        directory: WritablePath,
    ) -> Prediction:
        """One scene, paid at most once: its completed prediction (waiting, or deferring, first)."""
        from airflow_provider_magi.validation import LocalImage, inputs_fingerprint

        self._scene_number, self._done = number, done
        self._final = None
        self._item_model = self._scene_model(number)
        self._inputs = self._scene_inputs(number, scene)
        source = dict(self._inputs)
        if done:  # what this scene starts from, by the id that made it (never the frame's bytes)
            source["image"] = f"last frame of prediction {done[-1].id}"
        self._fingerprint = inputs_fingerprint(self._item_model, source)
        scene_ledger = ledger.for_record(f"scene-{number}")
        # A lost answer is never this video's own earlier scene, whatever the history shows.
        self.hook.not_candidates = frozenset(p.id for p in done)
        self._remaining = total - number + 1
        scenes_paid = "scene 1" if len(done) == 1 else f"scenes 1-{len(done)}"
        self._paid = (
            f"{scenes_paid} ({', '.join(p.id for p in done)}), kept in the ledger: a retry reuses them"
            if done
            else None
        )
        prediction_id = self._resume(scene_ledger, context)
        if prediction_id is None:
            if done:
                clip = clips.clip(number - 1, done[-1])
                self._inputs["image"] = LocalImage(clips.last_frame(clip, number - 1))
            prediction_id = self.submit_job(context, scene_ledger)
            self.log.info("Long video: scene %d/%d submitted as %s", number, total, prediction_id)
        else:
            self._say_scene_kept(number, total, prediction_id)
        prediction = self._final if self._final is not None else self._wait(prediction_id, context)
        final_result(prediction)  # a failed scene fails the task (a retry submits it afresh)
        return prediction

    def _say_scene_kept(self, number: int, total: int, prediction_id: str) -> None:
        """The log line for a scene the ledger already holds: "reused" only across tries.

        Each resume within a try walks the scenes again from the ledger; the scenes up to the one
        it deferred for were submitted or reused by this try, and said so then.
        """
        if self._resumed_for and prediction_id != self._resumed_for:
            said = "Long video: scene %d/%d done earlier in this try: %s"
            self.log.debug(said, number, total, prediction_id)
        elif self._resumed_for:
            self.log.info("Long video: scene %d/%d continues: prediction %s", number, total, prediction_id)
            self._resumed_for = ""  # the scenes after it are this resume's own
        else:  # "reused", never "paid": the log must not read as a second charge
            self.log.info(
                "Long video: scene %d/%d reused: prediction %s from an earlier try (not submitted again)",
                number,
                total,
                prediction_id,
            )

    def _wait(self, prediction_id: str, context: Context) -> Prediction:
        waiter = self._waiter(prediction_id)
        if not self.deferrable:
            return self.hook.wait_for_prediction(waiter)
        prediction = self.hook.get_prediction(prediction_id)
        waiter.observe(prediction, self.log)
        if not prediction.is_terminal:
            self.defer_to_trigger(waiter, context)  # resumes in execute_complete
        return prediction

    # ------------------------------------------------------------ clips and the join

    def _target_values(self, context: Context, prediction_id: str) -> str:
        pattern = self.filename
        map_index = getattr(context["ti"], "map_index", -1)
        if pattern == DEFAULT_FILENAME and map_index is not None and map_index >= 0:
            pattern = MAPPED_DEFAULT_FILENAME
        return render_filename(pattern, filename_values(context, prediction_id, 0))

    def _claim(self, context: Context, directory: WritablePath, target: WritablePath | None = None) -> None:
        """Refuse a video another task instance wrote (or claimed), and claim ours
        (:func:`airflow_provider_magi.paying.claims.claim`).

        A mapped task with a filename without ``{map_index}`` would otherwise have every map
        index pay for its scenes and then replace the one file. Checked before scene 1 when the
        name does not hold ``{prediction_id}``, and again just before the join is moved into place.
        """
        from airflow_provider_magi.paying.claims import claim, writer_of

        if target is None:
            name = self._target_values(context, "check")
            if name != self._target_values(context, "check-again"):
                return  # named after the last scene's prediction: checked at the join
            target = directory / name
        claim(
            target,
            writer_of(context),
            what="the long video",
            fix="put {map_index} (mapped tasks) or {run_id} in filename",
            note=" Scenes already paid stay in the ledger: a retry with a free filename reuses them.",
        )

    def _target(self, context: Context, directory: WritablePath, done: list[Prediction]) -> WritablePath:
        return directory / self._target_values(context, done[-1].id)

    def _join(
        self, context: Context, done: list[Prediction], clips: SceneClips, directory: WritablePath
    ) -> dict[str, Any]:
        from airflow_provider_magi import costs
        from airflow_provider_magi.downloads import place_file
        from airflow_provider_magi.media import REMUX, join_clips
        from airflow_provider_magi.scene_clips import segment_path

        target = self._target(context, directory, done)
        segments = [segment_path(target, k, p) for k, p in enumerate(done, 1)]
        local_segments = self.keep_segments and isinstance(directory, Path)
        files = [
            clips.clip(k, p, Path(segment) if local_segments else None)
            for k, (p, segment) in enumerate(zip(done, segments, strict=True), 1)
        ]
        joined = clips.work / "joined.mp4"
        result = join_clips(files, joined, drop_seam_frames=self.drop_seam_frames)
        how = "without re-encoding (packets copied)" if result.method == REMUX else "by re-encoding"
        self.log.info(
            "Joined %d scenes %s: %s; %d frames, %.3f s, %d seam frame(s) dropped",
            len(done),
            how,
            result.reason,
            result.frames,
            result.duration,
            result.dropped_frames,
        )
        self._claim(context, directory, target)
        size = place_file(joined, target)
        if self.keep_segments:
            for clip, segment in zip(files, segments, strict=True):
                if str(segment) != str(clip):
                    place_file(clip, segment)
        self._written = [target]
        self.log.info("Wrote %s (%d bytes)", target, size)
        scene_costs = [self._count_cost(p.id, self.model) for p in done]
        total = None if None in scene_costs else round(sum(c for c in scene_costs if c is not None), 6)
        self.log.info(
            "Long video cost: %s",
            costs.usd_text(total) if total is not None else "unknown (a scene's billing is not readable yet)",
        )
        result_dict = {
            "path": str(target),
            "size": size,
            "duration": result.duration,
            "frames": result.frames,
            "prediction_ids": [p.id for p in done],
            "scene_costs_usd": scene_costs,
            "cost_usd": total,
            "join": result.method,
            "dropped_seam_frames": result.dropped_frames,
            "segments": [str(segment) for segment in segments] if self.keep_segments else [],
        }
        keys = ("path", "size", "duration", "frames", "prediction_ids", "cost_usd")
        self._add_asset_extra(context, {**{key: result_dict[key] for key in keys}, "model": self.model})
        return result_dict

    # ------------------------------------------------------------ bookkeeping

    def _lineage(self) -> Any:
        from airflow_provider_magi.lineage import download_lineage

        return download_lineage(
            prediction_id=self.magi_prediction_id,
            output_urls=self._clips.output_urls if self._clips else [],
            written_paths=self._written,
        )
