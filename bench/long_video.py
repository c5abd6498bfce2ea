"""Long-video join benchmark: peak memory joining 8 scenes, against decoding one clip.

The clips are the local server's image-to-video clips, chained as the operator chains them
(each starts from the previous one's last frame), at 640x360, 24 fps. Each measurement runs in a
fresh subprocess, so its peak RSS is its own: the figure is the growth of the peak (VmHWM) over
the RSS after importing PyAV and the provider. The join streams (one clip open at a time), so its
peak should not grow with the number of scenes: 2 scenes and 8 should cost the same (the
re-encode's extra is the H.264 encoder's own look-ahead buffers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, report, table

CHILD = r"""
import json, sys, time
def rss_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
import av
from airflow_provider_magi import media
what, out, clips = sys.argv[1], sys.argv[2], sys.argv[3:]
before = rss_kb("VmRSS:")
start = time.perf_counter()
if what == "decode":
    media.last_frame_png(clips[0])
    frames = None
else:
    frames = media.join_clips(clips, out, drop_seam_frames=what == "join-drop").frames
print(json.dumps({"seconds": time.perf_counter() - start, "peak_growth_kb": rss_kb("VmHWM:") - before,
                  "frames": frames}))
"""


def make_clips(directory: Path, count: int, frames: int) -> list[Path]:
    import av

    from airflow_provider_magi import media
    from airflow_provider_magi.testing.clips import first_frame_clip
    from airflow_provider_magi.testing.video import sample_video

    sample = directory / "sample.mp4"
    sample.write_bytes(sample_video())
    with av.open(str(sample)) as clip:
        last = list(clip.decode(video=0))[-1].reformat(width=640, height=360, format="rgb24")
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = 640, 360, "rgb24"
    image = b"".join(bytes(p) for p in [*encoder.encode(last), *encoder.encode(None)])
    paths = []
    for number in range(1, count + 1):
        path = directory / f"scene-{number}.mp4"
        path.write_bytes(first_frame_clip(image, f"bench-{number}", frames=frames) or b"")
        image = media.last_frame_png(path)
        paths.append(path)
    return paths


def run(what: str, out: Path, clips: list[Path]) -> dict:
    answer = subprocess.run(
        [sys.executable, "-c", CHILD, what, str(out), *map(str, clips)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(answer.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--frames", type=int, default=120, help="frames per scene (120: 5 s)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_clips(Path(tmp), args.scenes, args.frames)
        size = sum(path.stat().st_size for path in clips) / 2**20
        rows = []
        for what, label, inputs in (
            ("decode", "decode one clip (baseline)", clips[:1]),
            ("join-drop", "join 2 scenes, seam frame dropped (re-encode)", clips[:2]),
            ("join-drop", f"join {args.scenes} scenes, seam frames dropped (re-encode)", clips),
            ("join-keep", f"join {args.scenes} scenes, seam frames kept (remux)", clips),
        ):
            results = [run(what, Path(tmp) / "out.mp4", inputs) for _ in range(args.runs)]
            rows.append(
                [
                    label,
                    f"{median([r['peak_growth_kb'] for r in results]) / 1024:.1f}",
                    f"{median([r['seconds'] for r in results]):.2f}",
                    results[0]["frames"] if results[0]["frames"] is not None else "-",
                ]
            )
    report(
        f"Long video: peak memory joining {args.scenes} scenes",
        table(["what", "peak RSS growth (MiB)", "seconds", "frames out"], rows),
        f"{args.scenes} clips of {args.frames} frames, 640x360 H.264 + AAC at 24 fps, {size:.1f} MiB in all, "
        f"chained as the operator chains them; medians of {args.runs} runs, each in a fresh subprocess.",
    )


if __name__ == "__main__":
    main()
