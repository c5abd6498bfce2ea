"""DAGs the long-video tests run with ``dag.test()`` (tests/test_long_video.py)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset

from airflow_provider_magi.operators.long_video import MagiLongVideoOperator

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.2}
LONG_VIDEOS = Asset("magi_test_long_videos")
SCENES = [
    "a lighthouse at dusk [[duration: 0.3]]",
    {"prompt": "the beam sweeps the sea [[duration: 0.3]]", "seed": 7},
    "a ship turns toward it [[duration: 0.3]]",
    {"prompt": "the ship docks [[duration: 0.3]]", "extra_inputs": {"enable_safety_checker": True}},
]


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, **kwargs)


class DiesAfterSceneSubmit(MagiLongVideoOperator):
    """Try 1 dies right after scene ``die_after``'s submit, as a killed worker would."""

    def __init__(self, *, die_after: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.die_after = die_after

    def submit_job(self, context: Any, ledger: Any) -> str:
        prediction_id = super().submit_job(context, ledger)
        if context["ti"].try_number == 1 and self._scene_number == self.die_after:
            raise RuntimeError(f"simulated worker crash after scene {self.die_after}'s submit")
        return prediction_id


class DiesBeforeJoin(MagiLongVideoOperator):
    """Try 1 dies once every scene is done; scene 3's prompt renders differently on try 2."""

    def _join(self, context: Any, *args: Any) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated crash before the join")
        return super()._join(context, *args)


for mode, deferrable, drop in (("deferrable", True, True), ("keep_seams", False, False)):
    with _dag(f"magi_test_long_video_{mode}", params={"image": ""}):
        MagiLongVideoOperator(
            task_id="long_video",
            scenes=SCENES,
            image="{{ params.image }}",
            destination=OUTPUT_DIR,
            filename="long/{run_id}/film.mp4",
            keep_segments=True,
            drop_seam_frames=drop,
            deferrable=deferrable,
            outlets=[LONG_VIDEOS],
            **FAST,
        )

with _dag("magi_test_long_video_dies_after_scene_3"):
    DiesAfterSceneSubmit(
        task_id="long_video",
        scenes=SCENES,
        die_after=3,
        destination=OUTPUT_DIR,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )

with _dag("magi_test_long_video_scene_3_edited"):
    DiesBeforeJoin(
        task_id="long_video",
        scenes=[
            *SCENES[:2],
            "{{ 'a ship' if ti.try_number == 1 else 'a whale' }} turns toward it [[duration: 0.3]]",
            SCENES[3],
        ],
        destination=OUTPUT_DIR,
        retries=1,
        retry_delay=timedelta(seconds=0),
        **FAST,
    )
