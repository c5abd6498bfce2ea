"""What a DAG file's parse imports: the operators and the sensor load only what parsing needs.

The money, validation and HTTP modules belong to execute time; every module a parse loads costs
every DAG file that uses the provider, on every parse (bench/import_cost.py measures the time;
this test holds the list, which does not swing with the machine's load).
"""

from __future__ import annotations

import json
import subprocess
import sys

# What importing the operators and the sensor may add after ``import airflow.sdk``, of our own.
PARSE_TIME_MODULES = {
    "airflow_provider_magi",  # get_provider_info() only (airflow.sdk has loaded it on 3.1+)
    "airflow_provider_magi.api",  # DEFAULT_MODEL, a parameter default
    "airflow_provider_magi.compat",
    "airflow_provider_magi.exceptions",
    "airflow_provider_magi.links",
    "airflow_provider_magi.metrics",  # via waiting; imports only logging until a metric is sent
    "airflow_provider_magi.models",  # the catalogue's input names: the standard library only
    "airflow_provider_magi.operators",
    "airflow_provider_magi.operators.download",
    "airflow_provider_magi.operators.long_video",
    "airflow_provider_magi.operators.magi",
    "airflow_provider_magi.scenes",  # a long video's scene rules: json and the exceptions only
    "airflow_provider_magi.sensors",
    "airflow_provider_magi.sensors.magi",
    "airflow_provider_magi.task_mixin",
    "airflow_provider_magi.waiting",  # the poll interval defaults
}
# Airflow's own modules differ between 3.0 and the newest release; these are the shims and SDK
# bases the operators subclass (3.0's shims load airflow.hooks). Anything else (the standard
# library's difflib included, requests, aiohttp, the OpenLineage provider) a parse does not need.
AIRFLOW_PREFIXES = ("airflow.sdk", "airflow.providers.common.compat", "airflow.hooks")
AIRFLOW_PACKAGES = {"airflow.providers.common"}

PROBE = """
import json, sys
import airflow.sdk
before = set(sys.modules)
import airflow_provider_magi.operators.magi
import airflow_provider_magi.operators.download
import airflow_provider_magi.operators.long_video
import airflow_provider_magi.sensors.magi
print("PARSE-IMPORTS " + json.dumps(sorted(set(sys.modules) - before)))
"""


def parse_time_imports() -> set[str]:
    """The modules the four imports add, in a fresh interpreter (this one has loaded them all)."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("PARSE-IMPORTS ")]
    return set(json.loads(line.removeprefix("PARSE-IMPORTS ")))


def test_a_parse_imports_no_module_it_does_not_need() -> None:
    added = parse_time_imports()
    ours = {module for module in added if module.split(".")[0] == "airflow_provider_magi"}
    assert "airflow_provider_magi.operators.magi" in ours  # the probe saw the real imports
    grown = sorted(ours - PARSE_TIME_MODULES)
    assert grown == [], f"a DAG file's parse now also imports {grown}: import them where the task runs"
    others = sorted(
        module for module in added - ours - AIRFLOW_PACKAGES if not module.startswith(AIRFLOW_PREFIXES)
    )
    assert others == [], f"a DAG file's parse now also imports {others}: import them where the task runs"
