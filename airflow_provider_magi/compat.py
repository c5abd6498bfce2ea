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
    "conf",
    "mask_secret",
]
