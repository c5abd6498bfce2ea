"""A WaveSpeed-compatible local server: test DAGs offline, with faults on demand.

Run ``python -m airflow_provider_magi.testing --port 8765`` or use
:class:`LocalWaveSpeedServer` as a context manager in tests.
"""

from airflow_provider_magi.testing.faults import Fault
from airflow_provider_magi.testing.server import LocalWaveSpeedServer

__all__ = ["Fault", "LocalWaveSpeedServer"]
