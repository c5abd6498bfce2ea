"""``python -m airflow_provider_magi.testing``: serve the local WaveSpeed API in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys

from airflow_provider_magi.testing.config import PER_SECOND_PRICES, SERVED_MODELS
from airflow_provider_magi.testing.faults import Fault
from airflow_provider_magi.testing.server import LocalWaveSpeedServer

DEFAULT_API_KEY = "local-test-key"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_magi.testing",
        description="WaveSpeed-compatible local server for MAGI-1 24B and MAGI-2 (loopback only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # every option shows its default
        epilog=(
            "Account endpoints (free to call, Bearer key): GET /api/v3/balance, "
            "POST /api/v3/billings/search, POST /api/v3/user/usage_stats. Each completed "
            "prediction is billed once, --billing-delay seconds after it completed; a submit "
            "the balance cannot pay for answers 403 'Insufficient balance' and starts nothing. "
            "Full reference: docs/local-server.md."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument(
        "--advertise-url",
        default=None,
        help="base URL its answers give out (outputs, uploads, results), e.g. http://10.1.2.3:8765 "
        "when bound to 0.0.0.0; by default the bound address, 127.0.0.1 for a wildcard bind",
    )
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the Bearer key clients must send")
    parser.add_argument("--completion-seconds", type=float, default=3.0, help="time from submit to completed")
    parser.add_argument(
        "--output-bytes",
        type=int,
        default=None,
        help="size of each output video (None: the bundled sample clip)",
    )
    parser.add_argument(
        "--faults", default="[]", help='JSON list of faults, e.g. \'[{"route": "result", "kind": "status"}]\''
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for probabilistic faults")
    parser.add_argument(
        "--models",
        default=",".join(SERVED_MODELS),
        help="comma-separated model ids a submit may name; any other answers 404",
    )
    parser.add_argument(
        "--sync-mode-limit", type=float, default=30.0, help="seconds a sync-mode submit is held at most"
    )
    parser.add_argument("--balance", type=_finite, default=100.0, help="USD the account starts with")
    parser.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=USD",
        type=_price,
        help="USD one completed prediction of MODEL costs; repeatable (other models: --default-price)",
    )
    parser.add_argument(
        "--default-price",
        type=float,
        default=0.30,
        help="USD for a model without --price (a stand-in: see WaveSpeed's pricing page)",
    )
    parser.add_argument(
        "--price-per-second",
        action="append",
        default=[],
        metavar="MODEL=USD",
        type=_price,
        help="USD per second of video asked for (duration) for MODEL; repeatable; default: the "
        "catalogue's (MAGI-2: 0.08); a --price for the same model wins",
    )
    parser.add_argument(
        "--billing-delay",
        type=float,
        default=0.0,
        help="seconds from a prediction's completion to its billing record and deduction",
    )
    parser.add_argument("--port-file", default=None, help="write the bound port to this file when ready")
    args = parser.parse_args(argv)

    faults = [Fault.from_dict(item) for item in json.loads(args.faults)]
    server = LocalWaveSpeedServer(
        api_key=args.api_key,
        completion_seconds=args.completion_seconds,
        output_bytes=args.output_bytes,
        faults=faults,
        host=args.host,
        port=args.port,
        seed=args.seed,
        models=[model.strip() for model in args.models.split(",") if model.strip()],
        sync_mode_limit=args.sync_mode_limit,
        balance=args.balance,
        prices=dict(args.price),
        default_price=args.default_price,
        billing_delay=args.billing_delay,
        advertise_url=args.advertise_url,
        per_second_prices={**PER_SECOND_PRICES, **dict(args.price_per_second)},
    )
    asyncio.run(_serve_forever(server, args.port_file))
    return 0


def _finite(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are no balance)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _price(text: str) -> tuple[str, float]:
    model, sep, amount = text.rpartition("=")
    try:
        price = float(amount)
    except ValueError:
        price = -1.0
    if not sep or not model.strip() or not price >= 0 or price == float("inf"):
        raise argparse.ArgumentTypeError(f"expected MODEL=USD with a non-negative amount, got {text!r}")
    return model.strip(), price


async def _serve_forever(server: LocalWaveSpeedServer, port_file: str | None) -> None:
    await server.serve()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Echo the key only when it is the well-known default: a key of your own stays out of logs.
    shown = server.api_key if server.api_key == DEFAULT_API_KEY else "the one given with --api-key"
    print(f"Local WaveSpeed server on {server.base_url} (API key: {shown})", flush=True)
    if port_file:
        with open(port_file, "w") as handle:
            handle.write(str(server._http.port))
    await stop.wait()
    await server._stop_all()


if __name__ == "__main__":
    sys.exit(main())
