"""``python -m loadtests run SCENARIO [--short]``, ``python -m loadtests compare A B``
and ``python -m loadtests ab --variant A=... --variant B=...`` (see loadtests/ab.py).

Scenarios: relay, backlog, idle, fanout, storm, cluster, or ``all``. Each run
starts its own G-Chat node and raw relay against a database created for the
run (on GCHAT_LOADTEST_DATABASE_URL / GCHAT_TEST_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/postgres) and dropped afterwards, prints
the table and writes ``report.json`` (+ ``latency.png``) under ``results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from loadtests import report
from loadtests.harness import REPO
from loadtests.scenarios import SCENARIOS, Run


def cmd_run(args: argparse.Namespace) -> int:
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.results / f"{stamp}-{args.scenario}{'-short' if args.short else ''}"
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m loadtests " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"{command}: results in {out}", flush=True)
    node_env = dict(item.split("=", 1) for item in args.node_env)
    overrides = {k: v for k, v in (("pairs", args.pairs), ("window", args.window)) if v}
    run = Run(short=args.short, workers_count=args.workers, out_dir=out,
              log=lambda line: print(line, flush=True), node_env=node_env,
              overrides=overrides)
    load_before = os.getloadavg()
    try:
        import uvloop

        scenarios = uvloop.run(run.run(names))
    except ImportError:  # pragma: no cover
        scenarios = asyncio.run(run.run(names))
    results = {"meta": report.meta(command, args.short, args.workers) | {"node_env": node_env},
               "load_average": {"before": load_before, "after": os.getloadavg()},
               "setup": scenarios.pop("setup", {}), "elapsed_s": scenarios.pop("elapsed_s", 0),
               "scenarios": scenarios}
    report.write_json(results, out / "report.json")
    note = report.chart(results, out / "latency.png")
    print()
    print(report.table(results))
    print("\n(fanout* sends pairwise to N officials; group fan-out with one sender-key body: "
          "python -m loadtests.group_fanout)")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}"
          .format(*load_before, *results["load_average"]["after"]))
    print(f"total {results['elapsed_s']:.0f}s; wrote {out / 'report.json'}"
          + ("" if note or not (out / "latency.png").exists() else f" and {out / 'latency.png'}"))
    if note:
        print(note)
    failed = [n for n, s in scenarios.items() if str(s.get("status", "")).startswith("failed")]
    return 1 if failed else 0


def cmd_ab(args: argparse.Namespace) -> int:
    from loadtests import ab

    variants = [ab.Variant.parse(spec) for spec in args.variant]
    if len(variants) < 2:
        raise SystemExit("give at least two --variant NAME=...")
    out = args.results / f"{time.strftime('%Y%m%d-%H%M%S')}-ab"
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m loadtests " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"{command}: results in {out}", flush=True)
    run = Run(short=True, workers_count=args.workers, out_dir=out,
              log=lambda line: print(line, flush=True),
              overrides={k: v for k, v in (("pairs", args.pairs),
                                           ("capacity_s", args.seconds),
                                           ("rate_s", args.seconds),
                                           ("backlog", args.backlog)) if v})
    load_before = os.getloadavg()
    try:
        import uvloop

        result = uvloop.run(ab.run_ab(run, variants, args.rounds, args.rate, args.scenario))
    except ImportError:  # pragma: no cover
        result = asyncio.run(ab.run_ab(run, variants, args.rounds, args.rate, args.scenario))
    result |= {"command": command, "load_average": {"before": load_before,
                                                    "after": os.getloadavg()}}
    ab.write(result, out / "report.json")
    print()
    print(ab.table(result))
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f}"
          .format(*load_before, *result["load_average"]["after"]))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    print(report.compare(args.a, args.b))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests",
                                     description="G-Chat load tests against the raw relay")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a scenario (or all)")
    run.add_argument("scenario", choices=(*SCENARIOS, "all"))
    run.add_argument("--short", action="store_true", help="small and quick (CI, make bench)")
    run.add_argument("--workers", type=int, default=2, help="load-generator processes")
    run.add_argument("--pairs", type=int, help="relay: sender/recipient pairs")
    run.add_argument("--window", type=int,
                     help="relay closed loop: messages each pair keeps in flight")
    run.add_argument("--results", type=Path, default=REPO / "results")
    run.add_argument("--node-env", action="append", default=[], metavar="GCHAT_X=VALUE",
                     help="server setting for the node(s), e.g. GCHAT_DB_POOL_SIZE=20")
    run.set_defaults(func=cmd_run)
    abp = commands.add_parser(
        "ab", help="relay or backlog phases on node variants (checkouts or settings), alternated")
    abp.add_argument("--variant", action="append", default=[],
                     metavar="NAME=CHECKOUT|GCHAT_X=V|field=N",
                     help="a node variant (the first is the base of ratios); see loadtests/ab.py")
    abp.add_argument("--rounds", type=int, default=3, help="closed-loop phases per variant")
    abp.add_argument("--seconds", type=float, help="length of each phase (default: short's)")
    abp.add_argument("--pairs", type=int, help="sender/recipient pairs")
    abp.add_argument("--rate", type=float, default=0.0,
                     help="fixed-rate phases at this many msg/s (default: closed loop)")
    abp.add_argument("--scenario", choices=("relay", "backlog"), default="relay",
                     help="what each phase runs: the relay, or the backlog's drain")
    abp.add_argument("--backlog", type=int,
                     help="backlog: envelopes queued per phase (default: short's 20,000)")
    abp.add_argument("--workers", type=int, default=2, help="load-generator processes")
    abp.add_argument("--results", type=Path, default=REPO / "results")
    abp.set_defaults(func=cmd_ab)
    comp = commands.add_parser("compare", help="show the change between two report.json")
    comp.add_argument("a", type=Path)
    comp.add_argument("b", type=Path)
    comp.set_defaults(func=cmd_compare)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
