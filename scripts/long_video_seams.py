"""Draw docs/images/long-video-seams.png: the frames either side of each cut of a long video.

Chains four clips as MagiLongVideoOperator does (each from the previous clip's last frame, as
PNG) with the local server's image-to-video clip maker, joins them with the seam frames
dropped, and sets the joined video's frame before each cut beside the frame after it. PyAV and
PNG only: no other dependency.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import av

from airflow_provider_magi import media
from airflow_provider_magi.testing.clips import FRAMES, first_frame_clip
from airflow_provider_magi.testing.video import sample_video

OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "long-video-seams.png"
SCENES = 4
GAP = 8  # pixels between the pictures


def rows(frame: av.VideoFrame) -> list[bytes]:
    rgb = frame.reformat(format="rgb24")
    plane = rgb.planes[0]
    data = bytes(plane)
    return [data[y * plane.line_size : y * plane.line_size + rgb.width * 3] for y in range(rgb.height)]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        clip = directory / "scene-1.mp4"
        clip.write_bytes(sample_video())
        clips = [clip]
        for number in range(2, SCENES + 1):
            clip = directory / f"scene-{number}.mp4"
            clip.write_bytes(first_frame_clip(media.last_frame_png(clips[-1]), f"seams-{number}") or b"")
            clips.append(clip)
        joined = directory / "joined.mp4"
        media.join_clips(clips, joined, drop_seam_frames=True)
        cuts = [FRAMES * k - (k - 1) for k in range(1, SCENES)]  # first frame after each cut
        wanted = {index for cut in cuts for index in (cut - 1, cut)}
        with av.open(str(joined)) as video:
            frames = {i: rows(f) for i, f in enumerate(video.decode(video=0)) if i in wanted}
    width = len(frames[cuts[0]][0]) // 3
    gap_row = b"\xff" * (GAP * 3)
    picture: list[bytes] = []
    for cut in cuts:
        picture += [
            before + gap_row + after for before, after in zip(frames[cut - 1], frames[cut], strict=True)
        ]
        picture += [b"\xff" * ((2 * width + GAP) * 3)] * GAP
    picture = picture[:-GAP]
    out_width, out_height = 2 * width + GAP, len(picture)
    frame = av.VideoFrame(out_width, out_height, "rgb24")
    pad = bytes(frame.planes[0].line_size - out_width * 3)
    frame.planes[0].update(b"".join(row + pad for row in picture))
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = out_width, out_height, "rgb24"
    OUT.write_bytes(b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)]))
    print(
        f"wrote {OUT} ({out_width}x{out_height}): cuts after frames {[c - 1 for c in cuts]}", file=sys.stderr
    )


if __name__ == "__main__":
    main()
