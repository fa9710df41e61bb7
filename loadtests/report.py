"""Reports: the table on the terminal, JSON, a latency chart, and comparisons."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any

from loadtests.harness import REPO


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    return str(value)


def rows_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, scenario in results.get("scenarios", {}).items():
        if scenario.get("rows"):
            rows.extend(scenario["rows"])
        else:
            status = str(scenario.get("status", "?"))
            status = status if len(status) <= 70 else status[:67] + "..."
            rows.append({"scenario": name, "metric": status, "unit": "",
                         "gchat": None, "raw": None, "ratio": None, "target": "", "met": None})
    return rows


def table(results: dict[str, Any]) -> str:
    header = ("scenario", "metric", "unit", "G-Chat", "raw relay", "ratio", "target", "met")
    lines = [header]
    for r in rows_of(results):
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        lines.append((r["scenario"], r["metric"], r["unit"], _fmt(r["gchat"]), _fmt(r["raw"]),
                      ratio, r["target"], met))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) if i < 6 else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(line, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def meta(command: str, short: bool, workers: int) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, check=False).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "gchat", "protocol"],
                                    cwd=REPO, capture_output=True, text=True,
                                    check=False).stdout.strip())
    except OSError:
        commit, dirty = "?", False
    import os

    return {"command": command, "short": short, "workers": workers, "commit": commit,
            "dirty": dirty, "python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine()}


def _strip(value: Any) -> Any:
    """Drop raw sample lists (latencies) from the JSON; keep everything else."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("latencies_ms",)}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_strip(results), indent=1, default=str) + "\n")


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Latency percentiles against offered rate, G-Chat and raw relay; PNG."""
    relay = results.get("scenarios", {}).get("relay", {}).get("details")
    if not relay:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "install matplotlib for charts (.venv/bin/pip install matplotlib)"
    phases = relay["phases"]
    rates = [p["rate"] for p in phases]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for target, style in (("gchat", "-"), ("raw", "--")):
        for q, color in (("p50", "tab:blue"), ("p90", "tab:orange"), ("p99", "tab:red")):
            values = [p[target][f"{q}_ms"] for p in phases]
            left.plot(rates, values, style, color=color, marker="o",
                      label=f"{'G-Chat' if target == 'gchat' else 'raw relay'} {q}")
    left.set_xlabel("offered load (messages/s)")
    left.set_ylabel("end-to-end latency (ms)")
    left.set_yscale("log")
    left.set_title("1:1 relay latency at 10/50/90% of G-Chat capacity")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    capacity = relay["capacity"]
    names = ["G-Chat", "raw relay"]
    values = [capacity["gchat"]["throughput"], capacity["raw"]["throughput"]]
    right.bar(names, values, color=["tab:blue", "tab:gray"])
    for i, v in enumerate(values):
        right.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
    right.set_ylabel("messages/s (closed loop)")
    right.set_title("1:1 relay throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def compare(a_path: Path, b_path: Path) -> str:
    a = json.loads(a_path.read_text())
    b = json.loads(b_path.read_text())
    a_rows = {(r["scenario"], r["metric"]): r for r in rows_of(a)}
    b_rows = {(r["scenario"], r["metric"]): r for r in rows_of(b)}
    header = ("scenario", "metric", "unit", "A G-Chat", "B G-Chat", "change", "A ratio",
              "B ratio")
    lines = [header]
    for key in list(a_rows) + [k for k in b_rows if k not in a_rows]:
        ra, rb = a_rows.get(key), b_rows.get(key)
        ga = ra["gchat"] if ra else None
        gb = rb["gchat"] if rb else None
        change = "-"
        if isinstance(ga, int | float) and isinstance(gb, int | float) and ga:
            change = f"{(gb - ga) / abs(ga) * 100:+.1f}%"
        lines.append((key[0], key[1], (ra or rb or {}).get("unit", ""), _fmt(ga), _fmt(gb),
                      change,
                      "-" if not ra or ra["ratio"] is None else f"{ra['ratio']:.2f}x",
                      "-" if not rb or rb["ratio"] is None else f"{rb['ratio']:.2f}x"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [f"A: {a_path} ({a.get('meta', {}).get('commit', '?')})",
           f"B: {b_path} ({b.get('meta', {}).get('commit', '?')})", ""]
    for n, line in enumerate(lines):
        out.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
