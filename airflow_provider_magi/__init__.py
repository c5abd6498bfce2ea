"""Apache Airflow provider for MAGI-1 24B video generation on WaveSpeedAI.

Importing the package stays cheap: Airflow calls :func:`get_provider_info` from every component.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
    from airflow_provider_magi.connection_form import CONN_FIELDS, UI_FIELD_BEHAVIOUR

    return {
        "package-name": "airflow-provider-magi",
        "name": "WaveSpeed MAGI-1",
        "description": "Generate videos with MAGI-1 24B on WaveSpeedAI from Airflow DAGs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "WaveSpeed MAGI-1",
                "external-doc-url": "https://wavespeed.ai/docs/docs-api/wavespeed-ai/magi-1-24b",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "WaveSpeed MAGI-1",
                "python-modules": [
                    "airflow_provider_magi.operators.magi",
                    "airflow_provider_magi.operators.download",
                    "airflow_provider_magi.operators.long_video",
                    "airflow_provider_magi.operators.batch",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "WaveSpeed MAGI-1",
                "python-modules": ["airflow_provider_magi.sensors.magi"],
            }
        ],
        "triggers": [
            {
                "integration-name": "WaveSpeed MAGI-1",
                "python-modules": [
                    "airflow_provider_magi.triggers.magi",
                    "airflow_provider_magi.triggers.batch",
                ],
            }
        ],
        "hooks": [
            {
                "integration-name": "WaveSpeed MAGI-1",
                "python-modules": ["airflow_provider_magi.hooks.magi"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_magi.hooks.magi.MagiHook",
                "hook-name": "WaveSpeed MAGI-1",
                "connection-type": "magi",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
        "extra-links": ["airflow_provider_magi.links.MagiPredictionLink"],
    }
