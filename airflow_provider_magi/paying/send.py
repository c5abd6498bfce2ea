"""Intent -> POST -> id for a wave of items: the one submit loop every operator shape pays through.

A single video and a long video's scene are a wave of one; a batch sends a wave of up to
``max_in_flight``. Each wave is recorded in a :class:`Journal` before its first POST (the intents)
and after its last (the ids, and what provably never started), so a worker killed anywhere in
between leaves an intent that a later try looks up instead of paying for blindly.

The resend rules live in the hook (a 429 or a connection never made is resent there; an answer
that may have been accepted never is); this loop decides what each outcome means for the wave:

==============  ===============================================  ===============================
outcome         raised by the hook                               what the wave does
==============  ===============================================  ===============================
``PAID``        (an answer naming an id)                         the id is journaled
``UNCERTAIN``   MagiSubmitUncertainError                         kept as an intent: looked up
``REFUSED``     MagiRejectedError (400, 404, 413, 422)           not paid; the item fails
``BAD_INPUT``   MagiInputError (a local frame that went bad)     not paid; the item fails
``PACED``       MagiAPIError 429 past the hook's own resends     not sent; the rest wait
``STOPPED``     MagiAuthError, never connected, other API errors  not sent; the wave stops, raised
==============  ===============================================  ===============================
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_magi.exceptions import (
    MagiAPIError,
    MagiAuthError,
    MagiError,
    MagiInputError,
    MagiRejectedError,
    MagiSubmitUncertainError,
)

if TYPE_CHECKING:
    from airflow_provider_magi.api import Prediction

PAID = "paid"
UNCERTAIN = "uncertain"
REFUSED = "refused"
BAD_INPUT = "bad_input"
PACED = "paced"
STOPPED = "stopped"
NOT_SENT = "not_sent"  # the wave stopped before reaching this item
CUT_OFF = "cut_off"  # the loop died (a killed worker, an unexpected error) while sending it


@dataclass(frozen=True)
class Outcome:
    """What one item's submit came to."""

    kind: str
    prediction: Prediction | None = None
    error: MagiError | None = None

    @property
    def started(self) -> bool | None:
        """True when a prediction was started, False when provably not, None when unknown."""
        return True if self.kind == PAID else None if self.kind in (UNCERTAIN, CUT_OFF) else False


@dataclass
class Wave:
    """A wave's outcomes by item key, the pause a 429 asked for, and the error that stopped it."""

    outcomes: dict[Any, Outcome] = field(default_factory=dict)
    pause: float = 0.0
    stopped_by: MagiError | None = None

    @property
    def paid(self) -> dict[Any, str]:
        return {key: o.prediction.id for key, o in self.outcomes.items() if o.kind == PAID and o.prediction}

    def keys(self, *kinds: str) -> set[Any]:
        return {key for key, outcome in self.outcomes.items() if outcome.kind in kinds}


class Journal(Protocol):
    """Where a wave's intents and ids are recorded (a single item's ledger record, a batch's book)."""

    def intend(self, keys: Sequence[Hashable]) -> None:
        """Record the wave's intents, before any POST: a failure here sends nothing."""

    def resent(self, key: Hashable) -> None:
        """The hook is about to send ``key``'s submit again (after a 429 or no connection)."""

    def settle(self, wave: Wave) -> None:
        """Record the ids, and drop the intents of items provably not started."""


def send_wave(
    hook: Any,
    model: str,
    items: Sequence[tuple[Hashable, Mapping[str, Any]]],
    journal: Journal,
    *,
    webhook_url: str | None = None,
    min_pause: float = 0.0,
    log: Any = None,
) -> Wave:
    """Pay for ``items`` (key, validated inputs) in order, once each; the journal is settled
    whatever stops the loop. A 429 past the hook's resends, or an error that says the API cannot
    be used now, leaves the rest of the wave unsent; the caller raises ``wave.stopped_by``."""
    journal.intend([key for key, _ in items])
    wave = Wave()
    sending: Hashable | None = None
    try:
        for number, (key, inputs) in enumerate(items):
            sending = key
            if wave.stopped_by is not None or wave.pause:
                wave.outcomes[key] = Outcome(NOT_SENT)
                continue
            outcome = send_one(
                hook, model, inputs, webhook_url=webhook_url, before_resend=_resent(journal, key)
            )
            wave.outcomes[key] = outcome
            if outcome.kind == PACED:
                assert isinstance(outcome.error, MagiAPIError)
                wave.pause = max(outcome.error.retry_after or 0.0, min_pause)
                if log is not None:
                    log.warning(
                        "WaveSpeed's rate limit refused a submit (429); %d item(s) wait %.1fs.",
                        len(items) - number,
                        wave.pause,
                    )
            elif outcome.kind == STOPPED:
                wave.stopped_by = outcome.error
    finally:
        # Items the loop never reached (it was killed or raised) are provably not sent; the one
        # it was sending keeps its intent, and a later try looks it up.
        if sending is not None and sending not in wave.outcomes:
            wave.outcomes[sending] = Outcome(CUT_OFF)
        for key, _ in items:
            wave.outcomes.setdefault(key, Outcome(NOT_SENT))
        journal.settle(wave)
    return wave


def send_one(
    hook: Any,
    model: str,
    inputs: Mapping[str, Any],
    *,
    webhook_url: str | None = None,
    before_resend: Callable[[], None] | None = None,
) -> Outcome:
    """One item's POST (after uploading its local frames), as an :class:`Outcome`."""
    from airflow_provider_magi.validation import LocalImage

    body = dict(inputs)
    try:
        uploaded = False
        for name, value in inputs.items():  # a first (or last) frame, read and checked now
            if isinstance(value, LocalImage):
                body[name] = hook.upload_media(value.read())
                uploaded = True
        if uploaded and before_resend is not None:
            # An upload can take minutes: the journal learns when the POST really leaves, so a
            # look-up after a killed worker searches WaveSpeed's history around it.
            before_resend()
        prediction = hook.create_prediction(
            body,
            model=model,
            webhook_url=webhook_url,
            check_guards=False,  # the caller asked the spend view for the whole wave just now
            before_resend=before_resend,
        )
    except MagiSubmitUncertainError as error:
        return Outcome(UNCERTAIN, error=error)
    except MagiAuthError as error:
        return Outcome(STOPPED, error=error)
    except MagiRejectedError as error:
        return Outcome(REFUSED, error=error)
    except MagiAPIError as error:
        return Outcome(PACED if error.http_status == 429 else STOPPED, error=error)
    except MagiInputError as error:
        return Outcome(BAD_INPUT, error=error)
    except MagiError as error:  # never connected: provably not started
        return Outcome(STOPPED, error=error)
    return Outcome(PAID, prediction=prediction)


def _resent(journal: Journal, key: Hashable) -> Callable[[], None]:
    return lambda: journal.resent(key)
