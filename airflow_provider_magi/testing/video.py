"""The local server's output: a real, playable MP4, padded to any size without breaking it.

``sample.mp4`` (2 s, 320x180 H.264 + AAC, made with ffmpeg) ships as package data. Larger outputs
append one MP4 ``free`` box, which players skip, so a 200 MB download is still a valid video and
costs the server no memory: the padding is generated chunk by chunk. An image-to-video
prediction serves its own clip instead of the sample (``clips.py``), padded the same way.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Iterator
from functools import lru_cache
from importlib.resources import files

_CHUNK = 256 * 1024
_BOX_HEADER = 8
_LARGE_BOX_HEADER = 16


@lru_cache(maxsize=1)
def sample_video() -> bytes:
    return files("airflow_provider_magi.testing").joinpath("sample.mp4").read_bytes()


def video_size(size: int | None, clip: bytes | None = None) -> int:
    """The size actually served: at least the clip (default: the sample), and room for a whole
    padding box."""
    base = len(clip if clip is not None else sample_video())
    if size is None or size <= base:
        return base
    return max(size, base + _BOX_HEADER)


def _padding_header(padding: int) -> bytes:
    if padding < 2**32:
        return struct.pack(">I4s", padding, b"free")
    return struct.pack(">I4sQ", 1, b"free", padding)


def iter_video(size: int | None, start: int = 0, clip: bytes | None = None) -> Iterator[bytes]:
    """Bytes ``start..`` of the video of ``size`` bytes (``clip``, default the sample), in chunks."""
    sample = clip if clip is not None else sample_video()
    total = video_size(size, sample)
    padding = total - len(sample)
    prefix = sample + (_padding_header(padding) if padding else b"")
    position = start
    if position < len(prefix):
        yield prefix[position:]
        position = len(prefix)
    zeros = bytes(_CHUNK)
    while position < total:
        step = min(_CHUNK, total - position)
        yield zeros[:step]
        position += step


async def aiter_video(size: int | None, start: int = 0, clip: bytes | None = None) -> AsyncIterator[bytes]:
    for chunk in iter_video(size, start, clip):
        yield chunk
