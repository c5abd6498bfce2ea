"""Each test stage runs what a deployment of its Airflow minor runs: the older minors' packages
are exactly their complete lock (so last night's releases cannot reach them), and connections are
encrypted with a Fernet key and decrypt again (cryptography 51 broke that on 3.0 and 3.1)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.environment

ROOT = Path(__file__).resolve().parent.parent
PROJECT = canonicalize_name("airflow-provider-magi")


def _minor() -> str:
    from airflow import __version__

    return ".".join(__version__.split(".")[:2])


def _locked(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{lock.name}: {line!r} is not a name==version pin"
            pins[canonicalize_name(name)] = version
    return pins


def test_an_older_minor_runs_exactly_its_lock() -> None:
    lock = ROOT / "ci" / f"lock-airflow-{_minor()}.txt"
    if not lock.exists():
        pytest.skip(f"Airflow {_minor()} is the newest stage: it resolves fresh on purpose")
    locked = _locked(lock)
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in importlib.metadata.distributions()
        if canonicalize_name(dist.metadata["Name"]) != PROJECT
    }
    assert "cryptography" in locked and "apache-airflow" in locked
    wrong = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    unlocked = sorted(set(installed) - set(locked))
    assert not wrong, f"installed versions differ from {lock.name} (locked, installed): {wrong}"
    assert not unlocked, f"installed but not in {lock.name}: {unlocked}. Fix: `make locks`"


def test_a_connection_is_encrypted_and_decrypts_with_the_fernet_key() -> None:
    from airflow.models.connection import Connection

    from tests.helpers import CANARY_KEY

    connection = Connection(conn_id="magi_fernet", conn_type="magi", password=CANARY_KEY, extra='{"a": 1}')
    assert connection.is_encrypted, "no Fernet key in effect: the check below would prove nothing"
    assert CANARY_KEY not in str(connection._password)
    assert connection.password == CANARY_KEY
    assert connection.extra_dejson == {"a": 1}
