"""``python -m loadtests ab``: one run, relay phases or backlog drains on alternating node variants.

A before/after comparison on a shared, noisy machine: two runs of the relay
scenario minutes apart see different neighbours, so their ratio says
little. Here every variant runs against the same database and the same
enrolled devices, each phase on a freshly started node once the audit
backlog is zero, in the order A B ... then ... B A, round after round; the
medians per variant, and their ratios to the first variant, are the result.

A variant is ``NAME=CHECKOUT`` (a directory holding another version of this
repository: its ``gchat`` runs the node) or ``NAME=GCHAT_X=V,GCHAT_Y=W``
(settings for this checkout's node), or both, ``NAME=CHECKOUT,GCHAT_X=V``.
A checkout swaps only the node: the load generator is always this
checkout's. What the generator does can differ per variant through a
lowercase ``field=N`` naming a ``loadtests.scenarios.Params`` field, e.g.
``before=/tmp/main,ack_batch=1`` drains as clients that ack each envelope
on its own did. Every checkout must have the same migrations (one database
serves them all).
Besides throughput and latency, the figures that survive noise best are the
node's and its PostgreSQL backends' CPU per delivered message.

``--rate R`` makes every phase a fixed rate of R msg/s instead of a closed
loop: the low-load figures (p50, CPU per message at 10% of capacity), where
a batch is one message and every statement per batch is paid per message.

``--scenario backlog`` makes every phase the backlog scenario's drain
(``--backlog N`` envelopes queued by SQL for 10 offline devices, then
drained, acking up to ``ack_batch`` envelopes per frame): envelopes per
second, and the node's and its backends' CPU per envelope.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import harness
from loadtests.scenarios import Params, Run

#: What each scenario's phases are compared by.
FIGURES = {
    "relay": ("throughput", "p50_ms", "p99_ms", "lump_windows", "p99_outside_lumps_ms",
              "server_ms_per_msg", "db_ms_per_msg", "cpu_ms_per_msg"),
    "backlog": ("env_per_s", "slowest_s", "server_ms_per_env", "db_ms_per_env",
                "cpu_ms_per_env", "generator_ms_per_env"),
}


@dataclass
class Variant:
    name: str
    checkout: Path
    env: dict[str, str] = field(default_factory=dict)
    #: Load-generator parameters of this variant (``Params`` fields).
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        name, _, rest = spec.partition("=")
        checkout, env, params = harness.REPO, {}, {}
        fields = {f.name for f in dataclasses.fields(Params)}
        for part in filter(None, rest.split(",")):
            key, _, value = part.partition("=")
            if key.startswith("GCHAT_") and "=" in part:
                env[key] = value
            elif key in fields and value:
                params[key] = int(value)
            else:
                checkout = Path(part).absolute()
                if not (checkout / "gchat" / "__main__.py").exists():
                    raise SystemExit(f"{checkout}: not a checkout of this repository")
        if not name:
            raise SystemExit(f"variant {spec!r}: give it a name, NAME=...")
        return cls(name, checkout, env, params)


async def run_ab(run: Run, variants: list[Variant], rounds: int,
                 rate: float = 0.0, scenario: str = "relay") -> dict[str, Any]:
    """Closed-loop (or ``rate`` msg/s) relay phases, or backlog drains
    (``scenario``), ``rounds`` per variant, alternating; medians and ratios."""
    figures = FIGURES[scenario]
    phases: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    home, params = harness.REPO, run.params
    try:
        harness.REPO = variants[0].checkout
        run.node_env = dict(variants[0].env)
        devices = (2 * run.params.pairs if scenario == "relay"
                   else run.params.backlog_devices + 1)
        await run.setup(devices, raw_relay=False)
        for r in range(rounds):
            for variant in variants if r % 2 == 0 else variants[::-1]:
                harness.REPO = variant.checkout  # the node's working directory: its gchat
                run.node_env = dict(variant.env)
                run.params = dataclasses.replace(params, **variant.params)
                await run.restart_node()
                await run.audit_drained_after()
                run.log(f"  {variant.name} round {r + 1}/{rounds} ({variant.checkout}), "
                        f"load {os.getloadavg()[0]:.1f}")
                if scenario == "relay":
                    got = await run.relay_phase("gchat", "rate" if rate else "closed", rate,
                                                label=f"{variant.name}{r}")
                    extra = {"cpu": got["cpu"], "audit": got["audit"], "lumps": got["lumps"]}
                else:
                    got = await run.backlog_phase(label=f"{variant.name}{r}")
                    if got["failed_devices"] or got["left_in_inbox"]:
                        raise RuntimeError(f"{variant.name} round {r + 1}: drain failed: {got}")
                    extra = {"cpu": got["cpu"]}
                phases[variant.name].append({k: got[k] for k in figures} | extra)
    finally:
        harness.REPO, run.params = home, params
        await run.teardown()
    medians = {name: {k: statistics.median(p[k] for p in got) for k in figures}
               for name, got in phases.items()}
    base = medians[variants[0].name]
    ratios = {name: {k: (m[k] / base[k] if base[k] else float("nan")) for k in figures}
              for name, m in medians.items()}
    return {"variants": {v.name: {"checkout": str(v.checkout), "env": v.env, "params": v.params}
                         for v in variants},
            "scenario": scenario, "rounds": rounds, "rate": rate or None, "phases": phases,
            "medians": medians, "ratios": ratios}


def table(result: dict[str, Any]) -> str:
    names = list(result["medians"])
    lines = [f"| figure (median of {result['rounds']}) | " + " | ".join(names) + " | ratio "
             + " | ratio ".join(names[1:]) + f" to {names[0]} |",
             "|---" * (1 + 2 * len(names) - 1) + "|"]
    for k in FIGURES[result.get("scenario", "relay")]:
        cells = [f"{result['medians'][n][k]:,.3f}" if "ms" in k else
                 f"{result['medians'][n][k]:,.2f}" if k == "slowest_s" else
                 f"{result['medians'][n][k]:,.0f}" for n in names]
        ratios = [f"{result['ratios'][n][k]:.2f}x" for n in names[1:]]
        lines.append(f"| {k} | " + " | ".join(cells + ratios) + " |")
    if result.get("scenario", "relay") == "relay":  # a lump shows in one round, not the median
        cells = ["/".join(f"{p['p99_ms']:.1f}" for p in result["phases"][n]) for n in names]
        lines.append("| p99_ms, each round | " + " | ".join(cells) + " |" * len(names))
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path) -> None:
    out.write_text(json.dumps(result, indent=1, default=str))
