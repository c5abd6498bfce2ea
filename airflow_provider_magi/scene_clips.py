"""A long video's scene clips as local files, in the try's own work folder: a kept segment (its
name holds the prediction id, so an older scene's file never passes), a copy made earlier in the
try, or a fresh download of the prediction's output; and a clip's last frame, the next scene's
first."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.downloads import WritablePath


def segment_path(target: WritablePath, number: int, prediction: Prediction) -> WritablePath:
    """Where a kept segment goes: beside the video, named after its scene and prediction."""
    stem = target.name.rsplit(".", 1)[0]
    return target.parent / f"{stem}.scene-{number}.{prediction.id}.mp4"


class SceneClips:
    """The clips of one try, in ``work``; ``output_urls`` lists what was downloaded (lineage)."""

    def __init__(self, hook: Any, work: Path) -> None:
        self.hook = hook
        self.work = work
        self.output_urls: list[str] = []

    def clip(self, number: int, prediction: Prediction, segment: Path | None = None) -> Path:
        if segment is not None and segment.exists():
            return segment
        local = self.work / f"scene-{number}.mp4"
        if local.exists():
            return local
        target = segment if segment is not None else local
        url = prediction.outputs[0]
        self.output_urls.append(url)
        self.hook.download_output(
            url,
            target,
            allow_insecure_loopback=self.hook.is_local_server,
            label=f"Scene {number} (prediction {prediction.id}) output 0",
        )
        return target

    def last_frame(self, clip: Path, number: int) -> Path:
        """The clip's last frame as a lossless PNG, uploaded as the next scene's first frame."""
        from airflow_provider_magi.media import last_frame_png

        frame = self.work / f"scene-{number}-last-frame.png"
        frame.write_bytes(last_frame_png(clip))
        return frame
