"""DAGs for the shared money suite (#31): every money scenario, built once for each operator shape.

``tests/test_money_suite.py`` runs them; each of its tests is parametrized over the three shapes,
so a scenario cannot exist for one shape only. A shape pays for ``ITEMS[shape]`` predictions per
task: one video (``MagiGenerateVideoOperator``), a long video of two scenes
(``MagiLongVideoOperator``) or a batch of two inputs (``MagiBatchOperator``).

Crashes, clears and edits are simulated only through what Airflow itself calls on an operator
(``execute``, ``execute_complete``, ``defer``) and through XCom, the connection and the local
server, never through the operators' private methods: the suite stays valid however the paying
code inside them is arranged.

DAG ids: ``magi_money_<scenario>_<shape>[_<variant>]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_magi.operators.batch import MagiBatchOperator
from airflow_provider_magi.operators.download import MagiDownloadOutputsOperator
from airflow_provider_magi.operators.long_video import MagiLongVideoOperator
from airflow_provider_magi.operators.magi import MagiGenerateVideoOperator

OUTPUT_DIR = os.environ.get("MAGI_TEST_OUTPUT_DIR", "/tmp/magi-test-output")
FAST = {"poll_interval": 0.1, "max_poll_interval": 0.2}
RETRY = {"retries": 1, "retry_delay": timedelta(seconds=0)}
SHAPES = ("video", "long_video", "batch")
BASES: dict[str, type[Any]] = {
    "video": MagiGenerateVideoOperator,
    "long_video": MagiLongVideoOperator,
    "batch": MagiBatchOperator,
}
# How many predictions one task of the shape pays for.
ITEMS = {"video": 1, "long_video": 2, "batch": 2}
RANDOM_SEED = "{{ range(0, 100000) | random }}"
# The connection JSON a try switches to when try 1 dies (scenario 5: ledger_path edited).
NEXT_CONN_ENV = "MAGI_TEST_MONEY_NEXT_CONN"
UPSTREAM_PROMPT = "{{ ti.xcom_pull(task_ids='make_prompt') }}"
FIRST_PROMPT = "a lighthouse [[duration: 0.3]]"
NEW_PROMPT = "a harbour at night [[duration: 0.3]]"


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False, **kwargs)


def items(label: str, count: int, *, duration: float = 0.3, seed: Any = None) -> list[dict[str, Any]]:
    """``count`` distinct inputs (a batch's items, a long video's scenes)."""
    made = [{"prompt": f"{label} {k} [[duration: {duration}]]"} for k in range(count)]
    return [{**item, "seed": seed} for item in made] if seed is not None else made


def shape_kwargs(shape: str, inputs: list[dict[str, Any]], filename: str | None = None) -> dict[str, Any]:
    """The operator arguments that give the shape ``inputs`` (a video takes the first only)."""
    if shape == "video":
        first = inputs[0]
        return {"prompt": first["prompt"], **({"seed": first["seed"]} if "seed" in first else {})}
    if shape == "long_video":
        return {
            "scenes": inputs,
            "destination": OUTPUT_DIR,
            "filename": filename or "money/{dag_id}/{run_id}/{task_id}.mp4",
        }
    return {
        "inputs": inputs,
        "destination": OUTPUT_DIR,
        "filename": filename or "money/{dag_id}/{run_id}/{task_id}/{index}.mp4",
        "max_in_flight": 2,
    }


# ---------------------------------------------------------------- how a try ends or dies


class _TryAware:
    """Remembers the try number from the entry points Airflow calls."""

    _money_try: int = 0

    def execute(self, context: Any) -> Any:
        self._money_try = context["ti"].try_number
        return super().execute(context)  # type: ignore[misc]

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        self._money_try = context["ti"].try_number
        return super().execute_complete(context, event)  # type: ignore[misc]


class EndsTryOne(_TryAware):
    """Try 1 does all its work (paid and delivered), then fails at its very end, as when a
    finished task is cleared; ``change`` first gives the upstream task's XCom a new prompt, as
    when the upstream task is cleared too and returns other data. Try 2 runs in the same run."""

    def __init__(self, *, change: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.change = change

    def execute(self, context: Any) -> Any:
        return self._money_end(context, super().execute(context))

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        return self._money_end(context, super().execute_complete(context, event))

    def _money_end(self, context: Any, result: Any) -> Any:
        ti = context["ti"]
        if ti.try_number == 1:
            if self.change:
                from airflow.sdk.bases.xcom import BaseXCom

                BaseXCom.set(
                    key="return_value",
                    value=NEW_PROMPT,
                    dag_id=ti.dag_id,
                    task_id="make_prompt",
                    run_id=ti.run_id,
                )
            raise RuntimeError("try 1 ends here (its work is done and paid)")
        return result


class DiesAfterPaying(_TryAware):
    """Try 1's worker dies at its first deferral (what it submitted is paid and recorded) or, if
    it never defers, at its end. Before dying, the connection is edited for the next try
    (``$MAGI_TEST_MONEY_NEXT_CONN``): ``ledger_path`` added, removed or moved."""

    def defer(self, *args: Any, **kwargs: Any) -> Any:
        if self._money_try == 1:
            self._money_die()
        return super().defer(*args, **kwargs)  # type: ignore[misc]

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        if context["ti"].try_number == 1:
            self._money_die()
        return result

    def _money_die(self) -> None:
        os.environ["AIRFLOW_CONN_MAGI_DEFAULT"] = os.environ[NEXT_CONN_ENV]
        self.__dict__.pop("hook", None)  # a new worker reads the edited connection
        raise RuntimeError("simulated worker crash after paying")


class UpgradedAfterTryOne(DiesAfterPaying):
    """Try 1 runs as Airflow 3.2 does (no task state store: the ledger is in Variables), then its
    worker dies after paying; try 2 runs as 3.3 does: an upgrade between tries."""

    def execute(self, context: Any) -> Any:
        return super().execute(self._money_as_3_2(context))

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        return super().execute_complete(self._money_as_3_2(context), event)

    def _money_as_3_2(self, context: Any) -> Any:
        if context["ti"].try_number != 1:
            return context
        return {key: value for key, value in context.items() if key != "task_state_store"}


# Scenario 6: try 1 of every map index ends; once all have, the upstream list comes back reordered.
_ENDED: dict[str, int] = {}


class ReorderedAfterTryOne(_TryAware):
    mapped_count = 4
    money_shape: str  # set by operator_class

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        ti = context["ti"]
        if ti.try_number == 1:
            key = f"{ti.dag_id}/{ti.run_id}"
            _ENDED[key] = _ENDED.get(key, 0) + 1
            if _ENDED[key] == self.mapped_count:  # the last one: the list comes back reordered
                from airflow.sdk.bases.xcom import BaseXCom

                BaseXCom.set(
                    key="return_value",
                    value=self._money_reordered(),
                    dag_id=ti.dag_id,
                    task_id="make_list",
                    run_id=ti.run_id,
                )
            raise RuntimeError("try 1 ends here (its work is done and paid)")
        return result

    def _money_reordered(self) -> list[Any]:
        return REORDERED[self.money_shape]


class ReorderedAsInTheIssue(ReorderedAfterTryOne):
    """The issue's own case: [X, X, Y] comes back as [Y, X, X] (map index 1 keeps its input)."""

    mapped_count = 3

    def _money_reordered(self) -> list[Any]:
        x, y = X_AND_Y[self.money_shape]
        return [y, x, x]


class ReorderedIntoANewDuplicate(ReorderedAfterTryOne):
    """[X, Y] comes back as [Z, Z]: an input no try paid for, twice. The first map index to run
    pays for Z; the second must pay for a Z of its own, not take the first one's."""

    mapped_count = 2

    def _money_reordered(self) -> list[Any]:
        return [NEW_Z[self.money_shape]] * 2


class MapIndexZeroEndsBeforePaying(_TryAware):
    """Map index 0's try 1 ends before it pays anything (its budget spent, its worker lost);
    the others' first tries pay and succeed. The list never changes."""

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        if ti.try_number == 1 and ti.map_index == 0:
            raise RuntimeError("map index 0's try 1 ends before paying")
        return super().execute(context)


class FlippedBackInOneRound(_TryAware):
    """[X, Y] for try 1, [Y, X] for try 2, [X, Y] again for try 3: the upstream XCom changes
    between tries of one round (no clear raises clear_number in between)."""

    money_shape: str  # set by operator_class

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        ti = context["ti"]
        if ti.try_number in (1, 2):
            key = f"{ti.dag_id}/{ti.run_id}/{ti.try_number}"
            _ENDED[key] = _ENDED.get(key, 0) + 1
            if _ENDED[key] == 2:  # the last of this try's map indexes: the list flips
                from airflow.sdk.bases.xcom import BaseXCom

                x, y = X_AND_Y[self.money_shape]
                BaseXCom.set(
                    key="return_value",
                    value=[y, x] if ti.try_number == 1 else [x, y],
                    dag_id=ti.dag_id,
                    task_id="make_list",
                    run_id=ti.run_id,
                )
            raise RuntimeError(f"try {ti.try_number} ends here (its work is done and paid)")
        return result


_CLASSES: dict[tuple[str, str], type[Any]] = {}


def operator_class(shape: str, mixin: type[Any] | None = None) -> type[Any]:
    """The shape's operator, with ``mixin``'s behaviour in front of it (a module-level class)."""
    base = BASES[shape]
    if mixin is None:
        return base
    key = (shape, mixin.__name__)
    if key not in _CLASSES:
        name = f"{mixin.__name__}{base.__name__}"
        namespace: dict[str, Any] = {"__module__": __name__, "money_shape": shape}
        if "__init__" in mixin.__dict__:  # a function of the class's own, for BaseOperator's metaclass

            def __init__(self: Any, __init: Any = mixin.__dict__["__init__"], **kwargs: Any) -> None:
                __init(self, **kwargs)

            namespace["__init__"] = __init__
        made = type(name, (mixin, base), namespace)
        globals()[name] = made
        _CLASSES[key] = made
    return _CLASSES[key]


# The model the DAGs being built pay for (None: the operators' default, MAGI-1 24B).
_MODEL: list[str | None] = [None]
MAGI_2 = "sand-ai/magi-2/text-to-video"


def paying(shape: str, mixin: type[Any] | None = None, /, **kwargs: Any) -> Any:
    """One paying task of the shape (task id ``paying``), of the model being built."""
    model = {"model": _MODEL[0]} if _MODEL[0] else {}
    return operator_class(shape, mixin)(task_id=kwargs.pop("task_id", "paying"), **model, **kwargs)


def for_each_shape(
    name: str, build: Callable[[str], None], *, magi2: bool = False, **dag_kwargs: Any
) -> None:
    """The scenario's DAG for each shape; with ``magi2``, also ``..._magi2`` paying MAGI-2
    text-to-video (#33: every money scenario where the shape allows it)."""
    for shape in SHAPES:
        with _dag(f"magi_money_{name}_{shape}", **dag_kwargs):
            build(shape)
        if magi2:
            _MODEL[0] = MAGI_2
            try:
                with _dag(f"magi_money_{name}_{shape}_magi2", **dag_kwargs):
                    build(shape)
            finally:
                _MODEL[0] = None


# ---------------------------------------------------------------- 1: a random seed, resumed and retried


def _random_seed(shape: str) -> None:
    paying(
        shape,
        EndsTryOne,
        deferrable=True,
        **{
            **shape_kwargs(shape, items("a random seed", ITEMS[shape], seed=RANDOM_SEED)),
            **({"max_in_flight": 1} if shape == "batch" else {}),  # a resume between the two submits
        },
        **RETRY,
        **FAST,
    )


for_each_shape("random_seed", _random_seed, magi2=True)

# ---------------------------------------------------------------- 2-4: kills, lost answers, 429s
# The faults come from the test (the hook's POST wrapped, or the server's fault plan).


def _plain(shape: str) -> None:
    paying(
        shape,
        deferrable=True,
        **shape_kwargs(shape, items("a plain paid item", ITEMS[shape])),
        **RETRY,
        **FAST,
    )


for_each_shape("plain", _plain, magi2=True)

# ---------------------------------------------------------------- 5: ledger_path switched between tries


def _store_switched(shape: str) -> None:
    paying(
        shape,
        DiesAfterPaying,
        deferrable=True,
        **shape_kwargs(shape, items("a switched store", ITEMS[shape], duration=0.5)),
        **RETRY,
        **FAST,
    )


for_each_shape("store_switched", _store_switched, magi2=True)


def _upgraded(shape: str) -> None:
    paying(
        shape,
        UpgradedAfterTryOne,
        deferrable=True,
        **shape_kwargs(shape, items("an upgrade between tries", ITEMS[shape], duration=0.5)),
        **RETRY,
        **FAST,
    )


for_each_shape("upgraded", _upgraded, magi2=True)

# ---------------------------------------------------------------- 6: a mapped list reordered, with duplicates


def _unit(shape: str, label: str) -> Any:
    """What one map index of the shape takes: a prompt, one scene's list, one input's list."""
    prompt = f"{label} [[duration: 0.2]]"
    return prompt if shape == "video" else [{"prompt": prompt}]


X_AND_Y = {shape: (_unit(shape, "duplicated X"), _unit(shape, "duplicated Y")) for shape in SHAPES}
MAPPED = {shape: [x, x, y, y] for shape, (x, y) in X_AND_Y.items()}
REORDERED = {shape: [y, y, x, x] for shape, (x, y) in X_AND_Y.items()}
MAPPED_ARGUMENT = {"video": "prompt", "long_video": "scenes", "batch": "inputs"}


def _mapped(shape: str) -> None:
    @task
    def make_list() -> list[Any]:
        return MAPPED[shape]

    fixed: dict[str, Any] = {} if shape == "video" else {"destination": OUTPUT_DIR}
    operator_class(shape, ReorderedAfterTryOne).partial(
        task_id="paying", deferrable=False, **fixed, **RETRY, **FAST
    ).expand(**{MAPPED_ARGUMENT[shape]: make_list()})


for_each_shape("mapped_reordered", _mapped)


def _mapped_as_in_the_issue(shape: str) -> None:
    @task
    def make_list() -> list[Any]:
        x, y = X_AND_Y[shape]
        return [x, x, y]

    fixed: dict[str, Any] = {} if shape == "video" else {"destination": OUTPUT_DIR}
    operator_class(shape, ReorderedAsInTheIssue).partial(
        task_id="paying", deferrable=False, **fixed, **RETRY, **FAST
    ).expand(**{MAPPED_ARGUMENT[shape]: make_list()})


for_each_shape("mapped_reordered_issue", _mapped_as_in_the_issue)

NEW_Z = {shape: _unit(shape, "new Z") for shape in SHAPES}


def _mapped_over(mixin: type[Any], make: Callable[[str], list[Any]], **retry: Any) -> Callable[[str], None]:
    def build(shape: str) -> None:
        @task
        def make_list() -> list[Any]:
            return make(shape)

        fixed: dict[str, Any] = {} if shape == "video" else {"destination": OUTPUT_DIR}
        operator_class(shape, mixin).partial(
            task_id="paying", deferrable=False, **fixed, **(retry or RETRY), **FAST
        ).expand(**{MAPPED_ARGUMENT[shape]: make_list()})

    return build


for_each_shape(
    "mapped_plain_retry", _mapped_over(MapIndexZeroEndsBeforePaying, lambda shape: [X_AND_Y[shape][0]] * 2)
)
for_each_shape(
    "mapped_flipped_back",
    _mapped_over(
        FlippedBackInOneRound,
        lambda shape: list(X_AND_Y[shape]),
        retries=2,
        retry_delay=timedelta(seconds=0),
    ),
)


def _mapped_into_a_new_duplicate(shape: str) -> None:
    @task
    def make_list() -> list[Any]:
        return list(X_AND_Y[shape])

    fixed: dict[str, Any] = {} if shape == "video" else {"destination": OUTPUT_DIR}
    operator_class(shape, ReorderedIntoANewDuplicate).partial(
        task_id="paying", deferrable=False, **fixed, **RETRY, **FAST
    ).expand(**{MAPPED_ARGUMENT[shape]: make_list()})


for_each_shape("mapped_new_duplicate", _mapped_into_a_new_duplicate)

# ---------------------------------------------------------------- 7: a clear, upstream data kept or changed


@task
def make_prompt() -> str:
    return FIRST_PROMPT


def _cleared(change: bool) -> Callable[[str], None]:
    def build(shape: str) -> None:
        inputs = [{"prompt": UPSTREAM_PROMPT}]
        if shape != "video":  # the changed input last: a long video keeps its first scene
            inputs = [{"prompt": "a fixed first item [[duration: 0.3]]"}, *inputs]
        make_prompt() >> paying(
            shape, EndsTryOne, change=change, deferrable=True, **shape_kwargs(shape, inputs), **RETRY, **FAST
        )

    return build


for _change in (False, True):
    for_each_shape(f"cleared_{'changed' if _change else 'unchanged'}", _cleared(_change), magi2=True)

# ---------------------------------------------------------------- 8: the guards while billing lags


def _guarded(shape: str) -> None:
    first = paying(
        shape,
        task_id="first",
        deferrable=True,
        **shape_kwargs(shape, items("first task", ITEMS[shape])),
        **FAST,
    )
    second = paying(
        shape,
        task_id="second",
        deferrable=True,
        trigger_rule="all_done",
        **shape_kwargs(shape, items("second task", ITEMS[shape])),
        **FAST,
    )
    first >> second


for_each_shape("guarded", _guarded, magi2=True)

# ---------------------------------------------------------------- 9: execution_timeout, retried

# A video (or both inputs of a batch, sent in one wave) takes 3 s; a try may take 2 s: try 1 pays
# and cannot finish. A long video's scenes take 2 s each, 3 s a try: try 1 pays scene 1 and
# scene 2, and cannot finish either. Each retry reattaches; spare retries absorb a loaded machine.
SLOW = {"video": 3.0, "long_video": 2.0, "batch": 3.0}
TRY_SECONDS = {"video": 2.0, "long_video": 3.0, "batch": 2.0}


def _timed_out(shape: str) -> None:
    paying(
        shape,
        deferrable=True,
        execution_timeout=timedelta(seconds=TRY_SECONDS[shape]),
        retries=4,
        retry_delay=timedelta(seconds=0),
        **shape_kwargs(shape, items("slow", ITEMS[shape], duration=SLOW[shape])),
        **FAST,
    )


for_each_shape("execution_timeout", _timed_out, magi2=True)

# ---------------------------------------------------------------- 10: two writers, one output path


def _daily(shape: str) -> None:
    if shape == "video":  # the single video's file is written by the download operator
        generate = paying(shape, deferrable=True, **shape_kwargs(shape, items("daily", 1)), **FAST)
        MagiDownloadOutputsOperator(
            task_id="download",
            prediction=generate.output,
            destination=OUTPUT_DIR,
            filename="money/{dag_id}/{ds}.mp4",
        )
        return
    filename = "money/{dag_id}/{ds}.mp4" if shape == "long_video" else "money/{dag_id}/{ds}/{index}.mp4"
    paying(shape, deferrable=True, **shape_kwargs(shape, items("daily", ITEMS[shape]), filename), **FAST)


for_each_shape("one_path", _daily, magi2=True)
