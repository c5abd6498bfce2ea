"""Video work for long videos: a clip's last frame as PNG, and clips joined into one MP4.

PyAV (the ``[video]`` extra) is imported only when a function here runs, so a DAG that uses the
long-video operator parses on a scheduler without it; :func:`require_av` fails a task at once,
before anything is paid, naming the extra to install.

**The seam.** Scene k+1 starts from scene k's last frame, so that frame would show twice in a
row. ``drop_seam_frames=True`` drops the first frame of every later clip. That frame is the
keyframe its clip's first group of pictures is predicted from (and a MAGI clip is often a single
such group), so it cannot be cut out of the compressed stream: dropping it means decoding and
encoding again. ``drop_seam_frames=False`` keeps the repeated frame (one frame held at each cut),
and then clips whose streams match (codec, size, pixel format, codec parameters, audio format)
are joined without re-encoding: their packets are copied with rebased timestamps, which is
lossless and fast. Clips that do not match are re-encoded either way (H.264, CRF 18).

**Audio** (when any clip has it) stays in sync: each clip contributes exactly as much audio as
the video it contributes (trimmed, or padded with silence), and the stretch under a dropped seam
frame is dropped with it. When copying packets, a clip's audio is cut where its video ends.

Everything streams: one clip is open at a time, and only one decoded frame (or, re-encoding,
one clip's decoded audio) is held in memory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import ModuleType
from typing import Any

from airflow_provider_magi.exceptions import MagiMissingDependencyError, MagiVideoError

INSTALL_HINT = 'pip install "airflow-provider-magi[video]"'
REMUX = "remux"
REENCODE = "re-encode"
CRF = "18"  # visually lossless for H.264: the seams must not show a quality step


def require_av() -> ModuleType:
    """PyAV, or the error that names the extra (raised before any paid request)."""
    try:
        import av
    except ImportError as error:
        raise MagiMissingDependencyError(
            "Long videos need PyAV to read and join clips, and it is not installed "
            f"({error}). Fix: {INSTALL_HINT} on the workers (nothing was submitted)."
        ) from None
    return av


@dataclass(frozen=True)
class JoinResult:
    """What :func:`join_clips` wrote, and how."""

    frames: int
    duration: float  # seconds
    method: str  # REMUX or REENCODE
    reason: str  # why that method, for the log
    dropped_frames: int


def last_frame_png(path: str | os.PathLike[str]) -> bytes:
    """The clip's last frame as PNG bytes (lossless: the next scene starts from exactly this)."""
    av = require_av()
    last = None
    try:
        with av.open(os.fspath(path)) as clip:
            stream = clip.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in clip.decode(stream):
                last = frame
    except (av.FFmpegError, IndexError) as error:
        raise MagiVideoError(f"Cannot read the last frame of {os.fspath(path)}: {error}") from None
    if last is None:
        raise MagiVideoError(f"{os.fspath(path)} holds no video frame")
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = last.width, last.height, "rgb24"
    packets = [*encoder.encode(last.reformat(format="rgb24")), *encoder.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


def join_clips(
    paths: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str], *, drop_seam_frames: bool
) -> JoinResult:
    """Join ``paths`` in order into one MP4 at ``target`` (a local file the caller moves into place)."""
    av = require_av()
    if not paths:
        raise MagiVideoError("No clips to join")
    try:
        signatures = [_signature(av, path) for path in paths]
        if drop_seam_frames and len(paths) > 1:
            reason = "dropping each seam's repeated frame needs a re-encode (it is its clip's first keyframe)"
        elif any(signature != signatures[0] for signature in signatures):
            reason = "the clips' streams differ (codec, size, pixel format or codec parameters)"
        else:
            return _remux(av, paths, target)
        return _reencode(av, paths, target, drop_seam_frames, reason)
    except av.FFmpegError as error:
        raise MagiVideoError(f"Joining {len(paths)} clips failed: {error}") from None


def _signature(av: ModuleType, path: str | os.PathLike[str]) -> tuple[Any, ...]:
    """What must be equal for packets of two clips to share one MP4 track."""
    with av.open(os.fspath(path)) as clip:
        if not clip.streams.video:
            raise MagiVideoError(f"{os.fspath(path)} has no video stream")
        video = clip.streams.video[0].codec_context
        parts: list[Any] = [
            video.name,
            video.width,
            video.height,
            video.pix_fmt,
            bytes(video.extradata or b""),
        ]
        if clip.streams.audio:
            audio = clip.streams.audio[0].codec_context
            parts += [audio.name, audio.sample_rate, audio.layout.name, bytes(audio.extradata or b"")]
        return tuple(parts)


def _remux(
    av: ModuleType, paths: Sequence[str | os.PathLike[str]], target: str | os.PathLike[str]
) -> JoinResult:
    """Copy every packet, shifting each clip's timestamps to start where the last one ended."""
    with av.open(os.fspath(paths[0])) as first, av.open(os.fspath(target), "w", format="mp4") as output:
        out_video = output.add_stream_from_template(first.streams.video[0])
        out_audio = output.add_stream_from_template(first.streams.audio[0]) if first.streams.audio else None
        offset = Fraction(0)  # seconds: where the next clip starts
        clock: int | None = None  # the audio track's end, in its time base
        frames = 0
        for index, path in enumerate(paths):
            with av.open(os.fspath(path)) as clip:
                video = clip.streams.video[0]
                audio = clip.streams.audio[0] if clip.streams.audio and out_audio is not None else None
                origin = Fraction(video.start_time or 0) * video.time_base
                length = Fraction(video.duration) * video.time_base if video.duration else None
                end = offset
                for packet in clip.demux(*[s for s in (video, audio) if s is not None]):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    base = packet.stream.time_base
                    shift = round((offset - origin) / base)
                    pts, dts = packet.pts + shift, packet.dts + shift
                    if packet.stream is video:
                        frames += 1
                        end = max(end, (pts + (packet.duration or 0)) * base)
                        packet.stream = out_video
                    else:
                        assert audio is not None
                        # Audio is laid end to end by its own length and cut where this clip's
                        # video ends (to the nearest half packet): a tail or an encoder's priming
                        # would otherwise push every later clip's sound off its picture.
                        if index and packet.pts < (audio.start_time or 0):  # priming
                            continue
                        clock = pts if clock is None else clock
                        size = audio.codec_context.frame_size or packet.duration or 0
                        if length is not None and (clock + size / 2) * base > offset + length:
                            continue
                        packet.duration = size  # what a decoder plays, padding included
                        pts = dts = clock
                        clock += size
                        packet.stream = out_audio
                    packet.pts, packet.dts = pts, dts
                    output.mux(packet)
                offset = end
    return JoinResult(frames, float(offset), REMUX, "the clips' streams match", 0)


def _reencode(
    av: ModuleType,
    paths: Sequence[str | os.PathLike[str]],
    target: str | os.PathLike[str],
    drop_seam_frames: bool,
    reason: str,
) -> JoinResult:
    """Decode every clip and encode one stream at the first clip's size and frame rate.

    A clip at another frame rate keeps its duration: its frames are repeated or dropped to fill
    its own time at the output's rate (numbering them one after another would play a 12 fps clip
    at twice its speed). The size is rounded down to even numbers, which H.264's 4:2:0 needs: an
    odd-sized clip would otherwise fail the join after every scene was paid for.
    """
    with av.open(os.fspath(paths[0])) as first:
        model = first.streams.video[0]
        width, height = model.codec_context.width, model.codec_context.height
        fps = Fraction(model.average_rate or 24)
    width, height = max(2, width - width % 2), max(2, height - height % 2)
    audio_model = _first_audio(av, paths)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(os.fspath(target), "w", format="mp4") as output:
        video_out: Any = output.add_stream(codec, rate=fps, options={"crf": CRF, "preset": "veryfast"})
        video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
        sound = _AudioTrack(av, output, *audio_model) if audio_model else None
        frames = dropped = 0
        for index, path in enumerate(paths):
            skip = 1 if drop_seam_frames and index else 0
            with av.open(os.fspath(path)) as clip:
                video = clip.streams.video[0]
                video.thread_type = "AUTO"
                rate = Fraction(video.average_rate or fps)  # this clip's own frame rate
                audio = clip.streams.audio[0] if clip.streams.audio and sound else None
                start, kept = frames, 0  # output frames before this clip; its frames kept
                for frame in clip.decode(*[s for s in (video, audio) if s is not None]):
                    if isinstance(frame, av.AudioFrame):
                        assert sound is not None
                        sound.take(frame)
                        continue
                    if skip:
                        skip -= 1
                        dropped += 1
                        continue
                    kept += 1
                    # This frame fills the output up to where its own time ends.
                    until = start + round(kept / rate * fps)
                    if frames >= until:
                        continue
                    out = frame.reformat(width=width, height=height, format="yuv420p")
                    while frames < until:
                        out.pts, out.time_base = frames, 1 / fps
                        frames += 1
                        output.mux(video_out.encode(out))
            if sound is not None:  # this clip's audio, cut or padded to the video it gave
                sound.end_clip(
                    skip_seconds=Fraction(1 if drop_seam_frames and index else 0) / rate,
                    until_seconds=frames / fps,
                )
        output.mux(video_out.encode(None))
        if sound is not None:
            sound.close()
    return JoinResult(frames, float(frames / fps), REENCODE, reason, dropped)


def _first_audio(av: ModuleType, paths: Sequence[str | os.PathLike[str]]) -> tuple[int, str] | None:
    for path in paths:
        with av.open(os.fspath(path)) as clip:
            if clip.streams.audio:
                context = clip.streams.audio[0].codec_context
                return context.sample_rate, context.layout.name
    return None


class _AudioTrack:
    """One AAC track fed clip by clip, each clip's share fixed by the video it contributed."""

    def __init__(self, av: ModuleType, output: Any, rate: int, layout: str) -> None:
        self.av, self.output, self.rate, self.layout = av, output, rate, layout
        self.stream: Any = output.add_stream("aac", rate=rate, layout=layout)
        self.resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self.clip = av.AudioFifo()  # the current clip's decoded audio
        self.pending = av.AudioFifo()  # cut to length, waiting for a whole encoder frame
        self.written = 0  # samples handed to the encoder or waiting in ``pending``
        self.encoded = 0  # samples handed to the encoder: the next frame's pts

    def take(self, frame: Any) -> None:
        for resampled in self.resampler.resample(frame):
            resampled.pts = None
            self.clip.write(resampled)

    def end_clip(self, *, skip_seconds: Fraction, until_seconds: Fraction) -> None:
        for resampled in self.resampler.resample(None):
            resampled.pts = None
            self.clip.write(resampled)
        skip = round(skip_seconds * self.rate)
        if skip and self.clip.samples >= skip:
            self.clip.read(skip)
        wanted = round(until_seconds * self.rate) - self.written
        available = min(wanted, self.clip.samples)
        if available > 0:
            share = self.clip.read(available)
            share.pts = None
            self.pending.write(share)
        if wanted > available:
            self.pending.write(self._silence(wanted - available))
        self.written += max(0, wanted)
        self.clip = self.av.AudioFifo()
        self.resampler = self.av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self._encode(final=False)

    def close(self) -> None:
        self._encode(final=True)
        self.output.mux(self.stream.encode(None))

    def _encode(self, *, final: bool) -> None:
        size = self.stream.codec_context.frame_size or 1024
        while self.pending.samples >= size or (final and self.pending.samples):
            frame = self.pending.read(min(size, self.pending.samples))
            frame.pts, frame.time_base = self.encoded, Fraction(1, self.rate)
            self.encoded += frame.samples
            self.output.mux(self.stream.encode(frame))

    def _silence(self, samples: int) -> Any:
        frame = self.av.AudioFrame(format="fltp", layout=self.layout, samples=samples)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = self.rate
        return frame
