"""``orderflow bench``: its options, and which benchmark they run."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from pathlib import Path

from orderflow.bench import closed_loop
from orderflow.bench.closed_loop import plot, render, run
from orderflow.models import StepPolicy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="orderflow bench", description=closed_loop.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--orders", type=int, default=200)
    parser.add_argument("-c", "--concurrency", type=int, default=20)
    parser.add_argument("--db-url", help="app database (default: a fresh SQLite file in --out)")
    parser.add_argument("--out", default="bench-results", help="where the JSON, PNG and databases go")
    parser.add_argument("--budget", type=float, default=15.0)
    parser.add_argument("--attempt-timeout", type=float, default=StepPolicy.attempt_timeout_seconds)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run a typical policy (regular activities, 2 s timeouts, 1 s backoff, default dev server)",
    )
    parser.add_argument("--baseline-orders", type=int, default=100)
    parser.add_argument("--no-progress", action="store_true")
    user_path = parser.add_argument_group(
        "the user path (--api)",
        "the stack as `orderflow dev` runs it; orders over HTTP in an open loop, each "
        "approved when /status says awaiting_review; -n, -c and --baseline do not apply",
    )
    user_path.add_argument("--api", action="store_true", help="benchmark the HTTP API path instead of the closed loop")
    user_path.add_argument("--rate", type=float, default=8.0, help="orders placed per second")
    user_path.add_argument("--duration", type=float, default=60.0, help="seconds during which orders arrive")
    user_path.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="the API's load-shedding limit (default: ORDERFLOW_MAX_IN_FLIGHT or its default)",
    )
    args = parser.parse_args(argv)
    if args.orders < 1 or args.concurrency < 1:
        parser.error("--orders and --concurrency must be at least 1")

    out = Path(args.out)
    if args.api:
        if args.baseline:
            parser.error("--baseline compares closed-loop runs; it does not combine with --api")
        if args.rate <= 0 or args.duration <= 0 or (args.max_in_flight is not None and args.max_in_flight < 0):
            parser.error("--rate and --duration must be positive, --max-in-flight at least 0")
        from orderflow.bench.user_path import main_api

        return main_api(
            args.rate, args.duration, args.db_url, out, args.budget, args.max_in_flight, progress=not args.no_progress
        )
    policy = StepPolicy(attempt_timeout_seconds=args.attempt_timeout)
    plans = [("orderflow", args.orders, policy, True)]
    if args.baseline:
        plans.append(("baseline", args.baseline_orders, StepPolicy.baseline(), False))
    results = []
    for label, n, plan_policy, fast in plans:
        report, runs = asyncio.run(
            run(
                label,
                n,
                args.concurrency,
                plan_policy,
                fast,
                args.db_url,
                out,
                args.budget,
                progress=not args.no_progress,
            )
        )
        print(render(report, args.budget), flush=True)
        results.append((report, runs))
    if len(results) == 2:
        ours, base = results[0][0], results[1][0]
        print(
            f"== ratio baseline/orderflow: p50 {base.p50 / ours.p50:.1f}x, p99 {base.p99 / ours.p99:.1f}x, "
            f"throughput {ours.throughput_per_s / base.throughput_per_s:.1f}x"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps([asdict(r) for r, _ in results], indent=2))
    plot(results, args.budget, out / "bench.png")
    print(f"wrote {out / 'bench.json'} and {out / 'bench.png'}")
    return 0 if all(not r.invariant_violations for r, _ in results) else 1
