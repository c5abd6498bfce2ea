"""Every difference between Airflow 3.0 and the newest 3.x release, in one place.

Imports go through ``airflow.providers.common.compat`` (Airflow's own shim package, a dependency of
apache-airflow-core) so the rest of the provider never branches on the Airflow version.
"""

from __future__ import annotations

from airflow import __version__ as AIRFLOW_VERSION
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseHook,
    BaseOperator,
    BaseOperatorLink,
    BaseSensorOperator,
    conf,
    mask_secret,
)
from packaging.version import Version

_AIRFLOW_BASE_VERSION = Version(Version(AIRFLOW_VERSION).base_version)
# 3.2 reads the connection form from provider info ("conn-fields"); older ones ask the hook.
AIRFLOW_V_3_2_PLUS = Version("3.2.0") <= _AIRFLOW_BASE_VERSION

# 3.3 brought the task state store (AIP-103), where the ledger keeps its records; older releases
# keep them in Variables (ledger_stores.py).
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= _AIRFLOW_BASE_VERSION
HAS_TASK_STATE_STORE = AIRFLOW_V_3_3_PLUS


def airflow_filesystem_known(scheme: str) -> bool | None:
    """Whether Airflow's ``ObjectStoragePath`` can open ``scheme://`` in this process: an installed
    provider registers the scheme, or a filesystem was ``attach()``ed for it. None when this
    Airflow cannot say (the check is then left to the write).

    fsspec knowing a scheme is not enough: ``memory://`` is built into fsspec, yet Airflow opens
    only the schemes its providers register (3.0 keeps the registry in ``airflow.io``, 3.1+ in
    ``airflow.sdk.io.fs``) and those attached, failing with a bare "No filesystem registered for
    scheme" otherwise.
    """
    try:
        from airflow.sdk.io.store import _STORE_CACHE

        try:
            from airflow.sdk.io.fs import has_fs
        except ImportError:  # Airflow 3.0
            from airflow.io import has_fs  # type: ignore[no-redef,attr-defined]
        attached = any(
            getattr(store, "protocol", None) == scheme and "fs" in vars(store)
            for store in list(_STORE_CACHE.values())
        )
        return attached or bool(has_fs(scheme))
    except Exception:  # a provider's filesystem module that fails to import, a moved registry
        return None


__all__ = [
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "HAS_TASK_STATE_STORE",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "BaseHook",
    "BaseOperator",
    "BaseOperatorLink",
    "BaseSensorOperator",
    "airflow_filesystem_known",
    "conf",
    "mask_secret",
]
