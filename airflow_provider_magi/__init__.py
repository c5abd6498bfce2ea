"""Apache Airflow provider for MAGI-1 24B video generation on WaveSpeedAI.

Importing the package stays cheap: Airflow calls :func:`get_provider_info` from every component.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def get_provider_info() -> dict[str, Any]:
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
                "python-modules": ["airflow_provider_magi.operators.magi"],
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
                "python-modules": ["airflow_provider_magi.triggers.magi"],
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
                "conn-fields": {
                    "connect_timeout": {
                        "label": "Connect timeout (s)",
                        "schema": {"type": ["number", "null"], "default": 10},
                    },
                    "read_timeout": {
                        "label": "Read timeout (s)",
                        "schema": {"type": ["number", "null"], "default": 60},
                    },
                    "max_retries": {
                        "label": "Retries for transient errors",
                        "schema": {"type": ["integer", "null"], "default": 5},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {
                        "password": "WaveSpeed API key (WAVESPEED_API_KEY)",
                        "host": "https://api.wavespeed.ai (leave empty for the real API)",
                    },
                },
            }
        ],
        "extra-links": ["airflow_provider_magi.links.MagiPredictionLink"],
    }
