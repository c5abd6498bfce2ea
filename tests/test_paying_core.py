"""The paying core's own rules, driven directly with in-memory stores and a fake clock (no server):
what an attacker's read of the refactor found (#31 item 1)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_magi.api import Prediction
from airflow_provider_magi.exceptions import MagiInputError, MagiSubmitUncertainError
from airflow_provider_magi.hooks.history import CANDIDATE_WINDOW_SECONDS
from airflow_provider_magi.ledger import Ledger, LedgerRecord, TaskIdentity
from airflow_provider_magi.ledger_prune import _written_at
from airflow_provider_magi.paying.item import ItemPayer
from airflow_provider_magi.validation import LocalImage

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
MODEL = "wavespeed-ai/magi-1-24b"


class Store:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def read(self, name: str) -> str | None:
        return self.data.get(name)

    def write(self, name: str, text: str) -> None:
        self.data[name] = text

    def delete(self, name: str) -> None:
        self.data.pop(name, None)

    def where(self, name: str) -> str:
        return f"memory:{name}"


class Killed(BaseException):
    """The worker's SIGKILL, as far as the code under test can tell."""


class SlowUploadHook:
    """WaveSpeed on a fake clock: the first frame's upload takes 300 s (retried attempts at the
    default request_timeout), then the POST creates a prediction and the worker is killed
    before the answer is read."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0
        self.created: list[Prediction] = []
        self.settings = SimpleNamespace(request_timeout=120.0)

    def now(self) -> float:
        return self.t

    def check_spending(self, *args: Any, **kwargs: Any) -> None:
        pass

    def upload_media(self, image: Any) -> str:
        self.t += 300.0
        return "https://cdn.example/frame.png"

    def create_prediction(self, body: Any, **kwargs: Any) -> Prediction:
        created = datetime.fromtimestamp(self.t, UTC).isoformat()
        self.created.append(
            Prediction(id=f"p{len(self.created) + 1}", model=MODEL, status="created", created_at=created)
        )
        raise Killed()

    def wavespeed_now(self) -> float:
        self.t += 60
        return self.t

    def find_submit_candidates(
        self, model: str, submitted_at: datetime, *, until: datetime
    ) -> list[Prediction]:
        margin = timedelta(seconds=CANDIDATE_WINDOW_SECONDS)  # the hook's own window
        return [
            p
            for p in self.created
            if submitted_at - margin <= datetime.fromisoformat(str(p.created_at)) <= until + margin
        ]


def test_a_post_after_a_slow_upload_is_still_found_when_its_worker_was_killed(tmp_path: Path) -> None:
    """Before: the intent was written before a 300 s upload and never stamped again, so the
    retry's look-up window ended before the POST, found nothing, and paid a second time."""
    frame = tmp_path / "frame.png"
    frame.write_bytes(PNG)
    hook = SlowUploadHook()
    ledger = Ledger(Store(), TaskIdentity("d", "t", "r"))
    ledger.clock = hook.now
    ti = SimpleNamespace(try_number=1, xcom_push=lambda key, value: None)
    context: Any = {"ti": ti, "dag_run": SimpleNamespace(clear_number=0)}
    log = SimpleNamespace(info=lambda *a: None, warning=lambda *a: None)

    def settle(seconds: float) -> None:
        hook.t += seconds

    payer = ItemPayer(hook, MODEL, log, attach_to_single_candidate=False, settle_wait=settle)
    with pytest.raises(Killed):
        payer.pay(ledger, context, "fp", {"prompt": "a cat", "image": LocalImage(frame)})
    ti.try_number = 2
    with pytest.raises(MagiSubmitUncertainError, match="p1"):  # named, not paid again
        payer.find_paid(ledger, context, "fp", None, regenerate=False)
    assert len(hook.created) == 1


def test_ledger_prune_dates_the_records_by_inputs_and_the_claims() -> None:
    shared = Store()
    ledger = Ledger(Store(), TaskIdentity("d", "t", "r", map_index=0, run_clears=0), by_inputs=shared)
    paid = LedgerRecord("f" * 64, MODEL, datetime(2020, 1, 1, tzinfo=UTC), prediction_id="abc123")
    ledger.write_by_inputs(paid)
    ledger.write_claim("abc123")
    key = "magi_ledger." + "0" * 40  # a Variable key of the provider's pattern
    assert len(shared.data) == 2
    assert all(_written_at(key, text) is not None for text in shared.data.values())


def test_the_records_by_inputs_keep_each_duplicate_and_read_the_older_single_form() -> None:
    shared = Store()
    ledger = Ledger(Store(), TaskIdentity("d", "t", "r", map_index=0, run_clears=0), by_inputs=shared)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for pid in ("p0", "p1", "p0"):  # p0 written twice: kept once
        ledger.write_by_inputs(LedgerRecord("f" * 64, MODEL, when, prediction_id=pid))
    assert [r.prediction_id for r in ledger.read_by_inputs("f" * 64)] == ["p1", "p0"]
    (name,) = shared.data
    shared.data[name] = LedgerRecord("f" * 64, MODEL, when, prediction_id="old").to_json()  # one record
    assert [r.prediction_id for r in ledger.read_by_inputs("f" * 64)] == ["old"]


def test_a_claim_is_another_map_index_s_only_in_this_round() -> None:
    shared = Store()

    def ledger(map_index: int, clears: int) -> Ledger:
        return Ledger(
            Store(), TaskIdentity("d", "t", "r", map_index=map_index, run_clears=clears), by_inputs=shared
        )

    ledger(0, 1).write_claim("p0")
    assert ledger(1, 1).claimed_by_another("p0")
    assert not ledger(0, 1).claimed_by_another("p0")  # its own
    assert not ledger(1, 2).claimed_by_another("p0")  # a later clear: stale


def test_a_claim_counts_while_its_map_index_holds_it_for_real_and_is_released_only_by_it() -> None:
    """With Airflow's states known, a claim is its map index's while that map index holds it for
    real (running, succeeded, or scheduled to resume with a deferral it waits on); up for retry,
    or scheduled for a retry, it holds it only on paper. A map index that moves off a prediction
    releases its claim; another's claim it leaves alone."""
    from airflow_provider_magi.paying.map_indexes import holds_for_real

    shared = Store()

    def ledger(map_index: int) -> Ledger:
        return Ledger(
            Store(), TaskIdentity("d", "t", "r", map_index=map_index, run_clears=0), by_inputs=shared
        )

    def state(of_1: str) -> Any:
        return lambda map_index, waiting: holds_for_real(of_1 if map_index == 1 else "none", waiting)

    ledger(1).write_claim("p1")
    assert ledger(0).claimed_by_another("p1", state("success"))
    assert not ledger(0).claimed_by_another("p1", state("up_for_retry"))
    assert not ledger(0).claimed_by_another("p1", state("scheduled"))  # a retry on its way
    ledger(1).write_claim("p1", waiting=True)
    assert ledger(0).claimed_by_another("p1", state("scheduled"))  # a resume on its way
    ledger(1).write_claim("p1")  # delivered: it waits on no trigger any more
    assert not ledger(0).claimed_by_another("p1", state("scheduled"))  # scheduled again: a retry or clear
    ledger(1).write_claim("p1", waiting=True)
    ledger(0).release_claim("p1")  # not map index 0's to release
    assert ledger(0).claimed_by_another("p1", state("success"))
    ledger(1).release_claim("p1")
    assert not ledger(0).claimed_by_another("p1", state("success"))


def test_a_catalogue_id_in_another_case_is_refused_not_passed_unchecked() -> None:
    from airflow_provider_magi.model_inputs import model_inputs

    with pytest.raises(MagiInputError, match="Fix: model='sand-ai/magi-2/text-to-video'"):
        model_inputs("Sand-AI/magi-2/text-to-video", prompt="x", duration=999)


def test_a_price_is_never_the_shortest_video_s_for_a_length_it_cannot_read() -> None:
    from airflow_provider_magi.models import MAGI_2_TEXT_TO_VIDEO as spec

    assert spec.price_of({"duration": "30"}) == 2.4
    assert spec.price_of({"duration": 30.0}) == 2.4
    assert spec.price_of({"duration": "thirty"}) == 2.4  # refused by the model; priced high meanwhile
    assert spec.price_of({}) == 0.4  # the default 5 s


def test_a_batch_item_without_a_duration_carries_the_model_s_default_length() -> None:
    from airflow_provider_magi.batch_inputs import check_items, load_items

    (item,) = check_items(load_items([{"prompt": "x"}]), "sand-ai/magi-2/text-to-video")
    assert (item.seconds, item.price) == (5, 0.4)  # the manifest line's duration and price_usd
