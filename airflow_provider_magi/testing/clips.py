"""The local server's own clips: MAGI-1 image-to-video (a real MP4 whose first frame is the given
image) and MAGI-2 (``magi_2_clip``: the asked length at 25 fps in small frames, with sound).

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


# ---------------------------------------------------------------- MAGI-2: any length, 25 fps, sound

MAGI_2_FPS = 25
AUDIO_RATE = 24000  # 960 samples per frame at 25 fps
SHORT_SIDE = 144  # small frames keep tests fast: the real service makes 1080p
MAX_LONG_SIDE = 512
# Frame sizes per aspect ratio (the short side is SHORT_SIDE; both sides even).
FRAME_SIZES = {
    "16:9": (256, 144),
    "9:16": (144, 256),
    "1:1": (144, 144),
    "4:3": (192, 144),
    "3:4": (144, 192),
    "21:9": (336, 144),
}
DEFAULT_ASPECT_RATIO = "16:9"  # text-to-video without aspect_ratio


def tone_hz(key: str) -> int:
    """The frequency of a clip's tone: a multiple of the frame rate (200 to 975 Hz), so every
    frame boundary is a whole number of cycles: the tone is at phase 0 there, and clips cut or
    joined on frame boundaries never click."""
    return MAGI_2_FPS * (8 + hashlib.sha256(key.encode()).digest()[4] % 32)


def magi_2_clip(
    key: str,
    seconds: int,
    *,
    aspect_ratio: str | None = None,
    image: bytes | None = None,
    last_image: bytes | None = None,
    fps: int = MAGI_2_FPS,
) -> bytes:
    """A MAGI-2 stand-in: ``seconds`` of video at ``fps`` with a tone as long as the video.

    Frame 0 is ``image`` (cropped to ``aspect_ratio`` when one is given, else the image's own
    shape; scaled to small frames) or, without a readable image, a picture made from ``key``.
    Later frames shift it at a pace and direction taken from ``key``. With ``last_image`` the
    clip wipes towards it, top to bottom, and its last frame is ``last_image`` (cropped and
    scaled to the same frame). The tone (``tone_hz(key)``) is exactly ``seconds`` long.
    """
    import av

    picture = _read_image(image) if image is not None else None
    if aspect_ratio in FRAME_SIZES:
        width, height = FRAME_SIZES[aspect_ratio]
    elif picture is not None:
        width, height = _fitted(picture.width, picture.height)
    else:
        width, height = FRAME_SIZES[DEFAULT_ASPECT_RATIO]
    rows = _cropped_rows(picture, width, height) if picture is not None else _pattern(key, width, height)
    ending = _read_image(last_image) if last_image is not None else None
    last_rows = _cropped_rows(ending, width, height) if ending is not None else None
    digest = hashlib.sha256(key.encode()).digest()
    dx = (1 + digest[0] % 4) * (1 if digest[1] % 2 else -1)
    dy = digest[2] % 3
    frames = seconds * fps

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        video: Any = container.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        # FFmpeg's default AAC coder garbles the first ~20 ms of a pure tone; "fast" does not.
        audio: Any = container.add_stream(
            "aac", rate=AUDIO_RATE, layout="mono", options={"aac_coder": "fast"}
        )
        for index in range(frames):
            moved = _moved_rows(rows, width, index * dx, index * dy)
            if last_rows is not None:
                covered = height if index == frames - 1 else height * index // max(1, frames - 1)
                moved = last_rows[:covered] + moved[covered:]
            frame = _frame_of(moved, width, height)
            frame.pts = index
            container.mux(video.encode(frame.reformat(format="yuv420p")))
        container.mux(video.encode(None))
        _write_periodic_tone(container, audio, tone_hz(key), seconds, fps)
    return out.getvalue()


def _read_image(data: bytes) -> Any:
    import av

    try:
        with av.open(io.BytesIO(data), "r") as source:
            return next(source.decode(video=0))
    except (av.FFmpegError, StopIteration, UnicodeDecodeError):
        return None


def _fitted(width: int, height: int) -> tuple[int, int]:
    """The image's shape in small frames: the short side at most SHORT_SIDE, the long side at
    most MAX_LONG_SIDE, both even."""
    scale = min(1.0, SHORT_SIDE / min(width, height), MAX_LONG_SIDE / max(width, height))
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def _cropped_rows(picture: Any, width: int, height: int) -> list[bytes]:
    """``picture`` scaled to cover ``width`` x ``height``, its centre cut out, as RGB rows."""
    scale = max(width / picture.width, height / picture.height)
    covered_w = max(width, round(picture.width * scale))
    covered_h = max(height, round(picture.height * scale))
    rgb = picture.reformat(width=covered_w, height=covered_h, format="rgb24")
    left, top = (covered_w - width) // 2 * 3, (covered_h - height) // 2
    return [row[left : left + width * 3] for row in _rows(rgb, covered_w, covered_h)[top : top + height]]


def _pattern(key: str, width: int, height: int) -> list[bytes]:
    """A picture for text-to-video: colour bands and a grid, tinted from ``key``."""
    digest = hashlib.sha256(key.encode()).digest()
    red, green, blue = digest[5], digest[6], digest[7]
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            grid = 60 if x % 32 < 2 or y % 32 < 2 else 0
            row += bytes(
                (
                    (red + x * 255 // width + grid) % 256,
                    (green + y * 255 // height + grid) % 256,
                    (blue + (x + y) * 2 + grid) % 256,
                )
            )
        rows.append(bytes(row))
    return rows


def _moved_rows(rows: list[bytes], width: int, dx: int, dy: int) -> list[bytes]:
    """The rows rotated ``dx`` pixels sideways and ``dy`` rows down (wrapping round)."""
    cut = (dx % width) * 3
    start = dy % len(rows)
    ordered = rows[-start:] + rows[:-start] if start else rows
    return [row[-cut:] + row[:-cut] for row in ordered] if cut else list(ordered)


def _frame_of(rows: list[bytes], width: int, height: int) -> Any:
    import av

    frame = av.VideoFrame(width, height, "rgb24")
    plane = frame.planes[0]
    pad = bytes(plane.line_size - width * 3)
    plane.update(b"".join(row + pad for row in rows))
    return frame


def _write_periodic_tone(container: Any, stream: Any, frequency: int, seconds: int, fps: int) -> None:
    """``seconds`` of a sine at ``frequency`` (a multiple of ``fps``): one video frame's worth
    of samples, repeated, so the sound is the same at every frame boundary."""
    import av

    per_frame = AUDIO_RATE // fps
    block = array("f", (0.2 * math.sin(2 * math.pi * frequency * i / AUDIO_RATE) for i in range(per_frame)))
    samples = block.tobytes() * (seconds * fps)
    total = seconds * AUDIO_RATE
    size = stream.codec_context.frame_size or 1024
    for start in range(0, total, size):
        count = min(size, total - start)
        frame = av.AudioFrame(format="fltp", layout="mono", samples=count)
        chunk = samples[start * 4 : (start + count) * 4]
        frame.planes[0].update(chunk + bytes(frame.planes[0].buffer_size - len(chunk)))
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
