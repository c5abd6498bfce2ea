"""The provider registers with Airflow, cheaply, with a connection form that shows what matters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from airflow_provider_magi import get_provider_info
from airflow_provider_magi.compat import AIRFLOW_V_3_2_PLUS
from airflow_provider_magi.hooks.magi import MagiHook


def test_provider_info_lists_every_piece() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-magi"
    assert info["connection-types"][0]["connection-type"] == "magi"
    assert info["connection-types"][0]["hook-class-name"] == "airflow_provider_magi.hooks.magi.MagiHook"
    assert info["extra-links"] == ["airflow_provider_magi.links.MagiPredictionLink"]
    modules = {
        kind: info[kind][0]["python-modules"] for kind in ("hooks", "operators", "sensors", "triggers")
    }
    assert modules["hooks"] == ["airflow_provider_magi.hooks.magi"]
    # Every operator, sensor and trigger module the package ships is listed (a new one included).
    package = Path(__file__).resolve().parent.parent / "airflow_provider_magi"
    for kind in ("operators", "sensors", "triggers"):
        shipped = {
            f"airflow_provider_magi.{kind}.{path.stem}"
            for path in (package / kind).glob("*.py")
            if path.stem != "__init__"
        }
        assert sorted(modules[kind]) == sorted(shipped), kind


def test_importing_the_package_and_operators_stays_cheap() -> None:
    # get_provider_info imports nothing of Airflow's; a DAG file importing our operators pulls in
    # no HTTP client (or retry library) beyond what airflow.sdk itself already loaded.
    code = (
        "import sys\n"
        "def tops(): return {m.split('.')[0] for m in sys.modules}\n"
        "import airflow_provider_magi; airflow_provider_magi.get_provider_info()\n"
        "assert 'airflow' not in tops(), 'get_provider_info imported airflow'\n"
        "from airflow.sdk import BaseOperator, BaseSensorOperator\n"
        "baseline = tops()\n"
        "import airflow_provider_magi.operators.magi, airflow_provider_magi.operators.download\n"
        "import airflow_provider_magi.sensors.magi\n"
        "added = (tops() - baseline) & {'requests', 'httpx', 'aiohttp', 'tenacity', 'h11', 'urllib3'}\n"
        "assert not added, added\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_airflow_knows_the_connection_type_and_form() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-magi" in manager.providers
    hook = manager.hooks["magi"]
    assert hook is not None
    assert hook.hook_name == "WaveSpeed MAGI-1"
    assert hook.connection_testable
    if not AIRFLOW_V_3_2_PLUS:  # the form comes from the hook (rendered only where FAB is installed)
        behaviour = MagiHook.get_ui_field_behaviour()
        assert behaviour["relabeling"] == {"password": "API key", "host": "Base URL"}
        assert set(behaviour["hidden_fields"]) == {"schema", "login", "port"}
        assert "max_retries" in behaviour["placeholders"]["extra"]
        return
    behaviour = manager.field_behaviours["magi"]
    assert behaviour["relabeling"] == {"password": "API key", "host": "Base URL"}
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port", "extra"}
    widgets = {name for name in manager.connection_form_widgets if name.startswith("extra__magi__")}
    assert widgets == {
        "extra__magi__connect_timeout",
        "extra__magi__read_timeout",
        "extra__magi__request_timeout",
        "extra__magi__download_timeout",
        "extra__magi__max_retries",
        "extra__magi__max_retry_wait",
        "extra__magi__max_polls_per_second",
        "extra__magi__min_balance_usd",
        "extra__magi__daily_budget_usd",
        "extra__magi__cost_lookup_seconds",
        "extra__magi__ledger_path",
    }
