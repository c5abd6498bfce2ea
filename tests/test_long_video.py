"""#22: a list of scenes becomes one continuous video, each scene paid for once.

Against the local server, whose image-to-video clips start from the frame they are given, so
each seam is measurable: the pixel difference printed by these tests is codec noise (CRF 18).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import av
import pytest
import requests

from airflow_provider_magi.exceptions import MagiInputError, MagiMissingDependencyError
from airflow_provider_magi.media import INSTALL_HINT, join_clips, last_frame_png, require_av
from airflow_provider_magi.scenes import parse_scenes
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.testing.clips import first_frame_clip
from airflow_provider_magi.testing.video import sample_video
from tests.conftest import DAGS_FOLDER
from tests.helpers import DAG_TEST_LOGS_EXCEPTIONS, lines_with, run_dag, task_instance, xcom

CLIP_FRAMES = 48  # the local server's clips: 2 s at 24 fps
FPS = 24
# Mean absolute difference per 8-bit channel that two encodes of one picture stay within at
# CRF 18 (measured: 0.5 to 1.6); a different picture (the next frame of motion: 8 to 18) is far above.
CODEC_NOISE = 4.0


def frames_rgb(path: str | Path) -> list[bytes]:
    with av.open(str(path)) as clip:
        return [bytes(frame.reformat(format="rgb24").planes[0]) for frame in clip.decode(video=0)]


def difference(a: bytes, b: bytes) -> float:
    assert len(a) == len(b)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


def audio_seconds(path: str | Path) -> float:
    with av.open(str(path)) as clip:
        rate = clip.streams.audio[0].rate
        return sum(frame.samples for frame in clip.decode(audio=0)) / rate


@pytest.fixture
def first_frame(tmp_path: Path) -> Path:
    """Scene 1's first frame: the sample clip's last frame, as a PNG file."""
    clip = tmp_path / "sample.mp4"
    clip.write_bytes(sample_video())
    path = tmp_path / "first.png"
    path.write_bytes(last_frame_png(clip))
    return path


def scene_ids(server: LocalWaveSpeedServer) -> list[str]:
    return [p.id for p in sorted(server.app.predictions.values(), key=lambda p: p.started)]


# ---------------------------------------------------------------- the video


def test_four_scenes_make_one_continuous_video(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, first_frame: Path, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_long_video_deferrable", image=str(first_frame))
    assert dag_run.state == "success"
    result = xcom(dag_run, "long_video")
    assert magi_conn.count("submit") == 4 and magi_conn.count("upload_put") == 4
    ids = scene_ids(magi_conn)
    assert result["prediction_ids"] == ids
    billed = {record.prediction_id: float(record.price) for record in magi_conn.billings}
    assert result["scene_costs_usd"] == [billed[i] for i in ids]  # what the server billed each scene
    assert result["cost_usd"] == pytest.approx(sum(billed.values()))
    assert xcom(dag_run, "long_video", key="scenes_done") == [
        {"scene": k, "prediction_id": i} for k, i in enumerate(ids, 1)
    ]
    # Scenes 2-4 start from the frame this task uploaded: an upload the server holds.
    for prediction in list(magi_conn.app.predictions.values())[1:]:
        assert prediction.inputs["image"].startswith(f"{magi_conn.base_url}/media/")

    expected = 4 * CLIP_FRAMES - 3  # each later scene's first frame repeats the seam: dropped
    out = frames_rgb(result["path"])
    assert result["frames"] == len(out) == expected
    assert result["duration"] == pytest.approx(expected / FPS)
    assert result["join"] == "re-encode" and result["dropped_seam_frames"] == 3
    assert abs(audio_seconds(result["path"]) - expected / FPS) < 0.05

    segments = [frames_rgb(path) for path in result["segments"]]
    assert [len(s) for s in segments] == [CLIP_FRAMES] * 4
    seam = 0
    for k in range(3):
        seam += CLIP_FRAMES - (1 if k else 0)
        last_of_k = segments[k][-1]
        at_seam = difference(out[seam - 1], last_of_k)  # the joined video's frame at the cut
        started_from = difference(segments[k + 1][0], last_of_k)  # the server began there
        moved = difference(segments[k + 1][1], last_of_k)  # one frame of motion, for scale
        print(
            f"seam {k + 1}: at seam {at_seam:.2f}, next scene's first frame {started_from:.2f}, "
            f"one frame later {moved:.2f}"
        )
        assert at_seam < CODEC_NOISE and started_from < CODEC_NOISE < moved
    logs = task_logs()
    assert "scene 3/4 submitted as" in logs and "Joined 4 scenes by re-encoding" in logs
    # One try, a resume per scene: each resume walks the scenes again, and none is "reused".
    assert lines_with(
        logs, "Long video: scene 3/4 continues"
    )  # stamped lines are read: the next check can fail
    assert not lines_with(logs, "reused") and not lines_with(logs, "from an earlier try")
    assert Path(result["path"]).name == "film.mp4"


def test_matching_clips_join_without_re_encoding_when_the_seam_frame_is_kept(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, first_frame: Path, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_long_video_keep_seams", image=str(first_frame))
    assert dag_run.state == "success"
    result = xcom(dag_run, "long_video")
    assert result["join"] == "remux" and result["dropped_seam_frames"] == 0
    out = frames_rgb(result["path"])
    assert result["frames"] == len(out) == 4 * CLIP_FRAMES
    assert result["duration"] == pytest.approx(4 * CLIP_FRAMES / FPS)
    assert abs(audio_seconds(result["path"]) - result["duration"]) < 0.05
    segments = [frames_rgb(path) for path in result["segments"]]
    assert out == [frame for segment in segments for frame in segment]  # bit for bit: no re-encode
    assert "without re-encoding" in task_logs()


def test_clips_that_differ_are_re_encoded(tmp_path: Path) -> None:
    sample = tmp_path / "sample.mp4"
    sample.write_bytes(sample_video())
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(first_frame_clip(last_frame_png(sample), "x") or b"")
    result = join_clips([sample, clip], tmp_path / "out.mp4", drop_seam_frames=False)
    assert result.method == "re-encode" and "differ" in result.reason
    assert len(frames_rgb(tmp_path / "out.mp4")) == result.frames == 2 * CLIP_FRAMES


def test_the_server_never_fetches_a_first_frame_off_this_machine(server: LocalWaveSpeedServer) -> None:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    answer = requests.post(
        f"{server.base_url}/api/v3/wavespeed-ai/magi-1-24b",
        json={"prompt": "x [[duration: 0]]", "image": "https://example.com/frame.png"},
        headers=headers,
        timeout=5,
    ).json()["data"]
    result = requests.get(answer["urls"]["get"], headers=headers, timeout=5).json()["data"]
    assert requests.get(result["outputs"][0], timeout=5).content == sample_video()


# ---------------------------------------------------------------- inputs


@pytest.mark.parametrize("scenes", [[], "not json", [{"seed": 1}], [{"prompt": "x", "image": "y"}], [3]])
def test_bad_scenes_are_refused(scenes: Any) -> None:
    with pytest.raises(MagiInputError, match="Fix:"):
        parse_scenes(scenes)


def test_one_prompt_given_as_scenes_is_named_in_the_error() -> None:
    with pytest.raises(MagiInputError) as refused:
        parse_scenes("A boat on a river")
    assert "Invalid scenes: 'A boat on a river'" in str(refused.value)
    assert "None" not in str(refused.value)
    assert "scenes=['A boat on a river']" in str(refused.value)


def test_a_mistyped_scene_key_is_named_with_its_close_match() -> None:
    with pytest.raises(MagiInputError, match=r"unknown key 'promt' \(did you mean 'prompt'\?\)"):
        parse_scenes([{"prompt": "a"}, {"promt": "b"}])
    with pytest.raises(MagiInputError, match=r"Invalid scene 1: .*: no 'prompt'"):
        parse_scenes([{"seed": 1}])


def test_scenes_as_prompts_dicts_or_json() -> None:
    assert [s.prompt for s in parse_scenes(["a", {"prompt": "b", "seed": 2}])] == ["a", "b"]
    assert parse_scenes('[{"prompt": "a", "seed": 3}]')[0].seed == 3


# ---------------------------------------------------------------- never pay twice


@pytest.mark.money
def test_a_crash_after_scene_3s_submit_resumes_there_paying_for_4_scenes(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, task_logs: Any
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_long_video_dies_after_scene_3")
    assert dag_run.state == "success"
    assert task_instance(dag_run, "long_video").try_number == 2
    assert len(magi_conn.app.predictions) == magi_conn.count("submit") == 4
    assert xcom(dag_run, "long_video")["prediction_ids"] == scene_ids(magi_conn)
    # Try 2 reuses scenes 1-3 from try 1, and says so once each, not again at each resume.
    logs = task_logs()
    assert [len(lines_with(logs, f"Long video: scene {k}/4 reused")) for k in (1, 2, 3, 4)] == [1, 1, 1, 0]


@pytest.mark.money
def test_editing_scene_3_regenerates_scenes_3_and_4_only(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_test_long_video_scene_3_edited")
    assert dag_run.state == "success"
    assert len(magi_conn.app.predictions) == magi_conn.count("submit") == 6
    first_try = scene_ids(magi_conn)[:4]
    final = xcom(dag_run, "long_video")["prediction_ids"]
    assert final[:2] == first_try[:2]  # scenes 1 and 2: reused
    assert not set(final[2:]) & set(first_try)  # scenes 3 and 4: new
    prompts = [magi_conn.app.predictions[i].inputs["prompt"] for i in final]
    assert prompts[2].startswith("a whale")


class Recorder:
    """A task logger that keeps each line as written (no stdout to parse)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.debug_lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)

    warning = info

    def debug(self, message: str, *args: Any) -> None:
        self.debug_lines.append(message % args)


def test_a_scene_paid_in_an_earlier_try_is_logged_as_reused_not_paid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
    from airflow_provider_magi.scenes import Scene

    operator = MagiLongVideoOperator(task_id="long_video", scenes=["a"], destination=str(tmp_path))
    log = Recorder()
    monkeypatch.setattr(MagiLongVideoOperator, "log", property(lambda _: log))
    paid = Prediction(id="a" * 32, model="wavespeed-ai/magi-1-24b", status="completed", outputs=("u",))
    monkeypatch.setattr(operator, "_resume", lambda ledger, context: paid.id)  # the ledger has it
    monkeypatch.setattr(operator, "_wait", lambda prediction_id, context: paid)

    class Ledger:
        def for_record(self, name: str) -> Ledger:
            return self

    scene = operator._scene({}, Ledger(), 1, 2, Scene("a"), [], tmp_path, tmp_path)  # type: ignore[arg-type]
    assert scene is paid
    (line,) = [line for line in log.lines if line.startswith("Long video: scene 1/2")]
    assert "reused" in line and "paid" not in line, line


def test_a_resume_within_the_same_try_says_continues_not_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    from airflow_provider_magi.api import Prediction
    from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
    from airflow_provider_magi.scenes import Scene

    first, second = (
        Prediction(id=c * 32, model="wavespeed-ai/magi-1-24b", status="completed", outputs=("u",))
        for c in "ab"
    )
    operator = MagiLongVideoOperator(task_id="long_video", scenes=["a", "b"], destination=str(tmp_path))
    log = Recorder()
    monkeypatch.setattr(MagiLongVideoOperator, "log", property(lambda _: log))
    monkeypatch.setattr(operator, "execute", lambda context: None)  # the walk is driven by hand below
    event = {"status": "success", "prediction_id": second.id, "try_number": 2, "result": second.to_result()}
    operator.execute_complete({"ti": SimpleNamespace(try_number=2)}, event)  # type: ignore[arg-type]

    class Ledger:
        def for_record(self, name: str) -> Ledger:
            return self

    for number, paid in enumerate((first, second), 1):
        monkeypatch.setattr(operator, "_resume", lambda ledger, context, paid=paid: paid.id)
        monkeypatch.setattr(operator, "_wait", lambda prediction_id, context, paid=paid: paid)
        operator._scene({}, Ledger(), number, 2, Scene("x"), [first][: number - 1], tmp_path, tmp_path)  # type: ignore[arg-type]
    said = [line for line in log.lines if line.startswith("Long video: scene")]
    assert said == [f"Long video: scene 2/2 continues: prediction {second.id}"]
    assert log.debug_lines == [f"Long video: scene 1/2 done earlier in this try: {first.id}"]

    # The same event handed to a later try (Airflow 3.0 keeps next_method across retries): the
    # try starts afresh, and what it finds in the ledger was paid by an earlier try.
    operator = MagiLongVideoOperator(task_id="long_video", scenes=["a", "b"], destination=str(tmp_path))
    monkeypatch.setattr(operator, "execute", lambda context: None)
    operator.execute_complete({"ti": SimpleNamespace(try_number=3)}, event)  # type: ignore[arg-type]
    assert operator._resumed_for is None


@pytest.mark.money
def test_without_pyav_the_dag_parses_and_the_task_fails_before_paying(
    dag_bag: Any, magi_conn: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch, task_logs: Any
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(MagiMissingDependencyError, match=r"airflow-provider-magi\[video\]"):
        require_av()
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    bag = DagBag(str(DAGS_FOLDER / "magi_long_video_dags.py"))
    assert bag.import_errors == {} and "magi_test_long_video_deferrable" in bag.dags

    dag_run = run_dag(dag_bag, "magi_test_long_video_deferrable")
    assert dag_run.state == "failed"
    assert magi_conn.count("submit") == 0 and magi_conn.count("upload_ticket") == 0
    if DAG_TEST_LOGS_EXCEPTIONS:
        assert INSTALL_HINT in task_logs()
