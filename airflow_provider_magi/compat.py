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

try:  # Airflow 3.3+: the task state store survives retries (AIP-103).
    from airflow.sdk import ResumableJobMixin

    HAS_TASK_STATE_STORE = True
except ImportError:  # Older Airflow 3: a stand-in that submits on every try.
    from airflow.providers.common.compat._resumable_job_mixin import (  # type: ignore[assignment]
        ResumableJobMixin,
    )

    HAS_TASK_STATE_STORE = False

__all__ = [
    "AIRFLOW_V_3_2_PLUS",
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
    "ResumableJobMixin",
    "conf",
    "mask_secret",
]
