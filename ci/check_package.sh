#!/usr/bin/env bash
# Build the sdist and wheel, check their metadata, and install the wheel into a clean virtualenv
# with nothing but `pip install <wheel>`: the provider must register, its connection type and form
# must be known, and the example DAGs must parse. Run by `make test` (target `package`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_BIN="${PYTHON_BIN:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON_BIN" -m build --sdist --wheel --outdir "$work/dist" . > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$PYTHON_BIN" -m twine check --strict "$work"/dist/*

wheel="$(ls "$work"/dist/*.whl)"
"$PYTHON_BIN" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
required = ["airflow_provider_magi/py.typed", "airflow_provider_magi/testing/sample.mp4",
            "airflow_provider_magi/hooks/magi.py", "airflow_provider_magi/operators/magi.py"]
missing = [name for name in required if name not in names]
tests = [name for name in names if name.startswith(("tests/", "example_dags/", "bench/"))]
assert not missing, f"wheel lacks {missing}"
assert not tests, f"wheel ships {tests[:5]}"
print(f"wheel contents ok: {len(names)} files, local server and sample video included, no tests")
PY

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "$wheel"
export AIRFLOW_HOME="$work/home" AIRFLOW__CORE__LOAD_EXAMPLES=False
# Captured first, then searched: `... | grep -q` under pipefail fails whenever grep exits before
# the writer has finished (SIGPIPE), which made this check fail by timing alone.
providers="$("$work/venv/bin/airflow" providers list -o plain)"
case "$providers" in
  *$'\n'airflow-provider-magi*|airflow-provider-magi*) ;;
  *) echo "airflow providers list does not show airflow-provider-magi"; exit 1 ;;
esac
"$work/venv/bin/python" - example_dags <<'PY'
import sys
from airflow.providers_manager import ProvidersManager
manager = ProvidersManager()
hook = manager.hooks["magi"]
assert hook is not None and hook.hook_name == "WaveSpeed MAGI-1", hook
behaviour = manager.field_behaviours.get("magi")
assert behaviour and behaviour["relabeling"]["password"] == "API key", behaviour
from airflow_provider_magi.connection_form import CONN_FIELDS
widgets = sorted(k for k in manager.connection_form_widgets if k.startswith("extra__magi__"))
assert widgets == sorted(f"extra__magi__{name}" for name in CONN_FIELDS), widgets
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
assert len(bag.dags) >= 4, sorted(bag.dags)
print(f"clean install ok: provider registered, connection form {widgets}, {len(bag.dags)} example DAGs parse")
PY
