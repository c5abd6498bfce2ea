"""Image-to-video clips for the local server: a real MP4 whose first frame is the given image.

The real MAGI-1 continues a video from its first frame; a stand-in that ignored the frame would
let a long video's seams go unchecked. Here frame 0 is the image itself (scaled to at most
``MAX_WIDTH``), and each later frame shifts it a little further, at a pace and direction taken
from the prediction id, so the last frame differs per prediction. A tone keyed the same way is
the audio track. Encoded with PyAV (H.264 + AAC); without PyAV the server serves its sample clip.

Written apart from ``airflow_provider_magi.media`` on purpose: the server shares no code with the
client side, so a bug in one cannot hide behind the same bug in the other.
"""

from __future__ import annotations

import hashlib
import io
import math
from array import array
from typing import Any

FPS = 24
FRAMES = 48  # 2 s, like the sample clip
MAX_WIDTH = 640
SAMPLE_RATE = 22050


def has_encoder() -> bool:
    """Whether this server can make image-to-video clips (PyAV is the ``[video]`` extra)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def first_frame_clip(image: bytes, key: str, *, frames: int = FRAMES, fps: int = FPS) -> bytes | None:
    """An MP4 that starts at ``image`` and moves away from it; None if the image cannot be read."""
    import av

    try:
        with av.open(io.BytesIO(image), "r") as source:
            picture = next(source.decode(video=0))
    except (av.FFmpegError, StopIteration, UnicodeDecodeError):
        return None
    width = min(MAX_WIDTH, picture.width) // 2 * 2
    height = max(2, round(picture.height * width / picture.width) // 2 * 2)
    rgb = picture.reformat(width=width, height=height, format="rgb24")
    rows = _rows(rgb, width, height)
    digest = hashlib.sha256(key.encode()).digest()
    dx = (1 + digest[0] % 4) * (1 if digest[1] % 2 else -1)  # pixels per frame, either way
    dy = digest[2] % 3  # rows per frame
    tone = 220.0 + digest[3] * 2

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        video: Any = container.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio: Any = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for index in range(frames):
            frame = _shifted(rows, width, height, index * dx, index * dy)
            frame.pts = index
            container.mux(video.encode(frame.reformat(format="yuv420p")))
        container.mux(video.encode(None))
        _write_tone(container, audio, tone, frames / fps)
    return out.getvalue()


def _rows(frame: Any, width: int, height: int) -> list[bytes]:
    plane = frame.planes[0]
    data = bytes(plane)
    return [data[y * plane.line_size : y * plane.line_size + width * 3] for y in range(height)]


def _shifted(rows: list[bytes], width: int, height: int, dx: int, dy: int) -> Any:
    """The image rotated ``dx`` pixels sideways and ``dy`` rows down (wrapping round)."""
    import av

    frame = av.VideoFrame(width, height, "rgb24")
    plane = frame.planes[0]
    cut = (dx % width) * 3
    pad = bytes(plane.line_size - width * 3)
    start = dy % height
    ordered = rows[-start:] + rows[:-start] if start else rows
    plane.update(b"".join(row[-cut:] + row[:-cut] + pad if cut else row + pad for row in ordered))
    return frame


def _write_tone(container: Any, stream: Any, frequency: float, seconds: float) -> None:
    import av

    total = round(seconds * SAMPLE_RATE)
    size = stream.codec_context.frame_size or 1024
    for start in range(0, total, size):
        count = min(size, total - start)
        samples = array(
            "f", (0.2 * math.sin(2 * math.pi * frequency * (start + i) / SAMPLE_RATE) for i in range(count))
        )
        frame = av.AudioFrame(format="fltp", layout="mono", samples=count)
        frame.planes[0].update(samples.tobytes() + bytes(frame.planes[0].buffer_size - count * 4))
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
