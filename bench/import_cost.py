"""Import and parse cost: what the provider adds to a DAG file's parse.

1. In a fresh interpreter: ``import airflow.sdk`` (the baseline every DAG file pays), then the
   provider's operator, sensor and download modules; which modules the provider adds (requests,
   httpx and aiohttp must not be among them: they load only when a task runs).
   With ``--against REF`` the same import is measured for the provider at git ``REF`` too, the two
   interleaved run by run, so a busy machine slows both alike and the two ratios compare.
2. DAG parse time of each example DAG that uses the provider, against a twin of the same shape
   (same task ids, edges and schedule) built from plain ``PythonOperator``s. Each parse runs in a
   forked child of a process with Airflow already imported, as the dag-processor does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, median_ratio, report, table

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("requests", "httpx", "httpcore", "h11", "aiohttp", "yarl", "multidict", "tenacity", "urllib3")

IMPORT_PROBE = f"""
import json, os, sys, time
if os.environ.get("MAGI_BENCH_SOURCE"):  # --against: that checkout's package before this one
    sys.path.insert(0, os.environ["MAGI_BENCH_SOURCE"])
t0, c0 = time.perf_counter(), time.process_time()
import airflow.sdk
t1, c1 = time.perf_counter(), time.process_time()
before = set(sys.modules)
import airflow_provider_magi.operators.magi
import airflow_provider_magi.operators.download
import airflow_provider_magi.sensors.magi
t2, c2 = time.perf_counter(), time.process_time()
answer = {{
    "sdk_ms": (t1 - t0) * 1000,
    "provider_ms": (t2 - t1) * 1000,
    "sdk_cpu_ms": (c1 - c0) * 1000,
    "provider_cpu_ms": (c2 - c1) * 1000,
    "added": sorted(set(sys.modules) - before),
    "file": airflow_provider_magi.operators.magi.__file__,
    "sdk_has": sorted(m for m in before if m.split(".")[0] in {HEAVY!r}),
}}
print("RESULT " + json.dumps(answer))
"""

PARSE_PROBE = """
import json, os, sys, time
import airflow.sdk
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
# The twins' one import, loaded up front as the processor's own imports are.
from airflow.providers.standard.operators.python import PythonOperator  # noqa: F401
results = {}
for path in sys.argv[1:]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        t = time.perf_counter()
        bag = DagBag(path)
        ms = (time.perf_counter() - t) * 1000
        answer = {"ms": ms, "errors": len(bag.import_errors), "dags": len(bag.dags)}
        os.write(write, json.dumps(answer).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        results[path] = json.loads(handle.read())
    os.waitpid(pid, 0)
print("RESULT " + json.dumps(results))
"""


def probe(code: str, *args: str, source: Path | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; its answer is the line starting with RESULT.
    ``source``: a directory holding another version of the package, imported instead of this one."""
    env = {**os.environ, "MAGI_BENCH_SOURCE": str(source)} if source else None
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env
    ).stdout
    (line,) = [line for line in out.splitlines() if line.startswith("RESULT ")]
    return dict(json.loads(line.removeprefix("RESULT ")))


def twin_source(path: Path) -> str:
    """The same DAG shape with PythonOperator tasks, generated from the parsed example."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    (dag,) = DagBag(str(path)).dags.values()
    lines = [
        "from datetime import datetime",
        "from airflow.sdk import DAG",
        "from airflow.providers.standard.operators.python import PythonOperator",
        "",
        "def _noop():",
        "    return None",
        "",
        f"with DAG(dag_id={dag.dag_id + '_twin'!r}, schedule={_schedule(dag)!r}, "
        "start_date=datetime(2026, 1, 1), catchup=False):",
    ]
    names = {task_id: f"t{i}" for i, task_id in enumerate(dag.task_ids)}
    for task_id, name in names.items():
        lines.append(f"    {name} = PythonOperator(task_id={task_id!r}, python_callable=_noop)")
    for task in dag.tasks:
        for downstream in sorted(task.downstream_task_ids):
            lines.append(f"    {names[task.task_id]} >> {names[downstream]}")
    return "\n".join(lines) + "\n"


def _schedule(dag: object) -> str | None:
    timetable = getattr(dag, "timetable", None)
    summary = getattr(timetable, "summary", None)
    return summary if isinstance(summary, str) and summary.startswith("@") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--against", metavar="REF", help="also measure the import at this git ref")
    args = parser.parse_args()

    # pip compiles an installed package's bytecode; an editable checkout (or PYTHONDONTWRITEBYTECODE)
    # would otherwise compile the provider from source on every parse and be measured unfairly.
    import compileall

    compileall.compile_dir(str(ROOT / "airflow_provider_magi"), quiet=1)
    before_dir = tempfile.mkdtemp(prefix="magi-bench-before-")
    if args.against:  # that ref's package alone, compiled as an installed one would be
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.against, "airflow_provider_magi"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", before_dir], input=archive, check=True)
        compileall.compile_dir(before_dir, quiet=1)
    imports, before_imports = [], []
    for _ in range(args.runs):  # interleaved: the machine's load falls on both alike
        imports.append(probe(IMPORT_PROBE))
        if args.against:
            before_imports.append(probe(IMPORT_PROBE, source=Path(before_dir)))
    assert all(r["file"].startswith(before_dir) for r in before_imports)
    provider_ms = median([r["provider_ms"] for r in imports])
    added = imports[0]["added"]
    heavy_added = sorted({m.split(".")[0] for m in added} & set(HEAVY))
    ours = [m for m in added if m.startswith("airflow_provider_magi")]
    others = [m for m in added if not m.startswith("airflow_provider_magi")]

    examples = [
        p for p in sorted((ROOT / "example_dags").glob("*.py")) if "airflow_provider_magi" in p.read_text()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        twins = []
        for path in examples:
            twin = Path(tmp) / f"{path.stem}_twin.py"
            twin.write_text(twin_source(path))
            twins.append(twin)
        files = [str(p) for pair in zip(examples, twins, strict=True) for p in pair]
        rounds = [probe(PARSE_PROBE, *files) for _ in range(args.runs)]
    rows = []
    extra = []
    for path, twin in zip(examples, twins, strict=True):
        ours_ms = median([r[str(path)]["ms"] for r in rounds])
        plain_ms = median([r[str(twin)]["ms"] for r in rounds])
        assert all(r[str(path)]["errors"] == 0 and r[str(path)]["dags"] == 1 for r in rounds), path
        extra.append(ours_ms - plain_ms)
        rows.append([path.stem, f"{ours_ms:.1f}", f"{plain_ms:.1f}", f"{ours_ms - plain_ms:+.1f}",
                     f"{ours_ms / plain_ms:.2f}"])  # fmt: skip
    body = table(
        ["example DAG", "parse ms (provider)", "parse ms (PythonOperator twin)", "added ms", "ratio"], rows
    )

    def import_rows(runs: list[dict], label: str) -> list[list[str]]:
        """Wall and CPU ms, and the provider's share of airflow.sdk's as the median of each run's
        own ratio (CPU time: what a busy machine's waiting does not inflate)."""

        def col(key: str) -> float:
            return median([r[key] for r in runs])

        share = median_ratio([r["provider_cpu_ms"] for r in runs], [r["sdk_cpu_ms"] for r in runs]) * 100
        return [
            [f"{label}import airflow.sdk (baseline)", f"{col('sdk_ms'):.0f}", f"{col('sdk_cpu_ms'):.0f}", ""],
            [f"{label}then the provider's operators and sensor", f"{col('provider_ms'):.1f}",
             f"{col('provider_cpu_ms'):.1f}", f"{share:.2f} %"],
        ]  # fmt: skip

    rows_import = import_rows(imports, "")
    if before_imports:
        rows_import += import_rows(before_imports, f"at {args.against}: ")
    body += "\n\n" + table(
        ["import in a fresh interpreter", "wall ms", "CPU ms", "CPU share of airflow.sdk's (target < 2 %)"],
        rows_import,
    )
    sdk_heavy = sorted({m.split(".")[0] for m in imports[0]["sdk_has"]})
    notes = textwrap.dedent(f"""\
        {args.runs} runs each, medians. Target: the provider adds under 20 ms to a parse and imports neither
        requests nor httpx at parse time. Worst example: {max(extra):+.1f} ms over its twin (target
        {"met" if max(extra) < 20 else "NOT met"}); provider import after airflow.sdk {provider_ms:.1f} ms.
        Modules the provider's import adds: {len(ours)} of its own and {len(others)} others
        ({", ".join(others) or "none"}); of {", ".join(HEAVY)}: {", ".join(heavy_added) or "none"} added
        (airflow.sdk itself already loads: {", ".join(sdk_heavy) or "none"}).""")
    report("Import and parse cost", body, notes)


if __name__ == "__main__":
    main()
