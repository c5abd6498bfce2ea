"""Issue 26 item 10: long videos that never replace another task's file, never attach a lost
scene to their own earlier scene, check the budget for every remaining scene before scene 1,
and join clips of other frame rates and odd sizes without losing time or failing after paying.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from airflow_provider_magi import costs
from airflow_provider_magi.exceptions import MagiInputError
from airflow_provider_magi.hooks.magi import MagiHook
from airflow_provider_magi.media import join_clips, last_frame_png
from airflow_provider_magi.testing import LocalWaveSpeedServer
from airflow_provider_magi.testing.clips import first_frame_clip
from airflow_provider_magi.testing.video import sample_video
from tests.helpers import CANARY_KEY, connection_json, run_dag, task_instance, wait_until, xcom

MAGI = "wavespeed-ai/magi-1-24b"
PRICE = 0.5


@pytest.fixture
def books(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalWaveSpeedServer]:
    with LocalWaveSpeedServer(api_key=CANARY_KEY, completion_seconds=0.2, prices={MAGI: PRICE}) as running:
        monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(running))
        yield running


def paid(server: LocalWaveSpeedServer) -> int:
    return server.count("submit")


def used_today(server: LocalWaveSpeedServer) -> None:
    """One video paid and billed today, so the model's price is known (and 0.50 is spent)."""
    prediction = MagiHook().create_prediction({"prompt": "earlier today [[duration: 0]]"}, MAGI)
    wait_until(lambda: any(b.prediction_id == prediction.id for b in server.billings), 10)


# ---------------------------------------------------------------- one file per task instance


@pytest.mark.money
def test_three_mapped_long_videos_with_the_default_filename_leave_three_files(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_r2_long_video_mapped")
    assert dag_run.state == "success"
    assert paid(books) == len(books.app.predictions) == 6
    paths = [xcom(dag_run, "long_video", map_index=k)["path"] for k in range(3)]
    assert len(set(paths)) == 3 and all(Path(p).is_file() for p in paths)  # the old code: one file
    assert [Path(p).name for p in paths] == [f"long_video_{k}.mp4" for k in range(3)]


@pytest.mark.money
def test_a_name_shared_by_mapped_tasks_is_never_replaced_and_the_others_pay_nothing(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_r2_long_video_mapped_one_name")
    states = [task_instance(dag_run, "long_video", k).state for k in range(3)]
    assert sorted(states) == ["failed", "failed", "success"]  # the old code: 3 successes, 1 file
    assert paid(books) == 2  # the winner's two scenes; the others refused before scene 1
    winner = states.index("success")
    result = xcom(dag_run, "long_video", map_index=winner)
    assert result["prediction_ids"] == [p.id for p in books.app.predictions.values()]
    assert Path(result["path"]).is_file()


# ---------------------------------------------------------------- a lost answer


@pytest.mark.money
def test_a_lost_scene_answer_never_attaches_to_the_video_s_own_earlier_scene(
    dag_bag: Any, books: LocalWaveSpeedServer
) -> None:
    dag_run = run_dag(dag_bag, "magi_r2_long_video_lost_scene_answer")
    assert books.count("submit", status=0) == 1  # scene 2's submit: dropped, never accepted
    assert len(books.app.predictions) == 1  # scene 1 only
    # The old code carried on with scene 1's prediction as scene 2 and "succeeded".
    assert dag_run.state == "failed"
    assert xcom(dag_run, "long_video") is None
    assert xcom(dag_run, "long_video", key="prediction_candidates") == []


# ---------------------------------------------------------------- the budget for every scene


@pytest.mark.money
def test_a_budget_for_two_of_four_scenes_refuses_before_scene_1(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    used_today(books)
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=3 * PRICE))
    dag_run = run_dag(dag_bag, "magi_r2_long_video_budget")
    assert dag_run.state == "failed"
    assert task_instance(dag_run, "long_video").try_number == 1
    assert paid(books) == 1  # the earlier video only: the old code paid scenes 1 and 2, then refused


@pytest.mark.money
def test_a_budget_for_all_four_scenes_lets_the_video_through(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    used_today(books)
    monkeypatch.setenv("AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=5 * PRICE))
    dag_run = run_dag(dag_bag, "magi_r2_long_video_budget")
    assert dag_run.state == "success"
    assert paid(books) == 1 + 4


def test_a_refusal_after_paid_scenes_names_them_instead_of_saying_nothing_was_paid() -> None:
    already = "scenes 1-2 (a1, b2), kept in the ledger: a retry reuses them"
    day = costs.utc_midnight(costs.datetime(2026, 3, 1, tzinfo=costs.UTC)).date()
    refusal = costs.daily_budget_decision(1.0, PRICE, 1.5, "c", day, MAGI, count=2, paid=already).refusal
    assert refusal is not None
    assert "2 more predictions of" in refusal and "$2.00, above" in refusal
    assert f"already paid: {already}" in refusal and "Nothing was uploaded" not in refusal
    floor = costs.balance_floor_refusal(0.1, 1.0, "c", paid=already)
    assert floor is not None and f"already paid: {already}" in floor


# ---------------------------------------------------------------- the join


def clip(tmp_path: Path, name: str, *, fps: int, frames: int) -> Path:
    sample = tmp_path / "sample.mp4"
    sample.write_bytes(sample_video())
    path = tmp_path / name
    path.write_bytes(first_frame_clip(last_frame_png(sample), name, frames=frames, fps=fps) or b"")
    return path


def seconds(path: Path) -> tuple[int, Fraction]:
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        frames = sum(1 for _ in video.decode(stream))
        return frames, Fraction(frames) / Fraction(stream.average_rate)


def test_clips_at_another_frame_rate_keep_their_duration_in_the_join(tmp_path: Path) -> None:
    first = clip(tmp_path, "a.mp4", fps=24, frames=48)  # 2 s
    second = clip(tmp_path, "b.mp4", fps=12, frames=24)  # 2 s, at half the rate
    result = join_clips([first, second], tmp_path / "out.mp4", drop_seam_frames=True)
    expected = 2 + Fraction(23, 12)  # the second clip without its seam frame
    frames, length = seconds(tmp_path / "out.mp4")
    assert frames == result.frames == 48 + 46
    assert abs(length - expected) <= Fraction(1, 24)  # the old join: 71 frames, 2.96 s
    assert abs(Fraction(result.duration) - expected) <= Fraction(1, 24)


def odd_clip(path: Path, width: int, height: int, frames: int = 12) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream: Any = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"  # odd sizes allowed
        for index in range(frames):
            picture = av.VideoFrame(width, height, "rgb24")
            picture.planes[0].update(bytes([index * 9 % 256]) * picture.planes[0].buffer_size)
            picture.pts = index
            container.mux(stream.encode(picture.reformat(format="yuv444p")))
        container.mux(stream.encode(None))
    return path


def test_odd_sized_clips_are_encoded_rounded_to_even(tmp_path: Path) -> None:
    clips = [odd_clip(tmp_path / f"{k}.mp4", 161, 121) for k in range(2)]
    result = join_clips(clips, tmp_path / "out.mp4", drop_seam_frames=True)  # the old join raised
    assert result.frames == 23
    with av.open(str(tmp_path / "out.mp4")) as video:
        context = video.streams.video[0].codec_context
        assert (context.width, context.height) == (160, 120)
        assert sum(1 for _ in video.decode(video=0)) == 23


# ---------------------------------------------------------------- the claim, raced


def test_a_claim_raced_by_another_map_index_is_refused_before_paying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mapped task instances start together: two may both see no marker. The second to write
    must not replace the first's claim and go on to pay for every scene, only to be refused at
    the join (the old code: both claims passed, both paid)."""
    from types import SimpleNamespace

    from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
    from airflow_provider_magi.paying.claims import WRITER_SUFFIX

    def claim(map_index: int) -> None:
        operator = MagiLongVideoOperator(
            task_id="long_video", scenes=["a"], destination=str(tmp_path), filename="shared.mp4"
        )
        ti = SimpleNamespace(dag_id="d", task_id="long_video", run_id="r", map_index=map_index)
        operator._claim({"ti": ti}, tmp_path)  # type: ignore[arg-type]

    claim(0)  # map index 0 claims the name...
    marker = tmp_path / f"shared.mp4{WRITER_SUFFIX}"
    real_exists = Path.exists
    # ...just after map index 1 looked and saw no marker: the race window, made to happen.
    monkeypatch.setattr(Path, "exists", lambda self: False if self == marker else real_exists(self))
    with pytest.raises(MagiInputError, match="written by another task instance"):
        claim(1)
    assert '"map_index": 0' in marker.read_text()  # the first claim stands


@pytest.mark.money
def test_an_unknown_price_does_not_stop_a_long_video_on_its_own_unbilled_scenes(
    dag_bag: Any, books: LocalWaveSpeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model's first use today, billing lagging: the check before scene 1 covered every scene
    (the spend alone, the price being unknown), so the video's own unbilled scenes do not make
    the next scene's check fail safe (another task's would)."""
    books.app.account.billing_delay = 3600.0
    # No scene is billed within any lookup: a one-second price lookup per scene, not ten, ends the same.
    monkeypatch.setenv(
        "AIRFLOW_CONN_MAGI_DEFAULT", connection_json(books, daily_budget_usd=5 * PRICE, cost_lookup_seconds=1)
    )
    dag_run = run_dag(dag_bag, "magi_r2_long_video_budget")
    assert dag_run.state == "success"
    assert paid(books) == 4 and task_instance(dag_run, "long_video").try_number == 1
