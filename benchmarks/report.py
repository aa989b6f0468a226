"""Machine/version facts, the printed table and the JSON document."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sqlite3
import sys

import django

from .measure import Row


def environment(engine: str, database_versions: dict) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "engine": engine, "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "machine": platform.machine(), "python": platform.python_version(),
        "django": django.get_version(), "sqlite": sqlite3.sqlite_version,
        "postgresql": database_versions.get("postgresql"),
    }


def environment_line(env: dict) -> str:
    pg = f", PostgreSQL {env['postgresql']}" if env.get("postgresql") else ""
    return (f"{env['platform']}, {env['cpu_count']} CPUs; Python {env['python']}, "
            f"Django {env['django']}, SQLite {env['sqlite']}{pg}; engine {env['engine']}")


def _rate(rate: float | None) -> str:
    return "failed" if rate is None else f"{rate:,.0f}"


def _notes(notes: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in notes.items() if k not in ("memory", "sequential"))


def table(rows: list[Row]) -> str:
    """A Markdown table: rates are medians, ratio = syncrouter rate / baseline rate."""
    lines = ["| row | N | syncrouter rows/s | baseline rows/s | ratio | notes |",
             "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        notes = _notes(row.notes) + (f" ERROR {row.error}" if row.error else "")
        lines.append(f"| {row.key} | {row.n:,} | {_rate(row.rate(row.syncrouter_median))} | "
                     f"{_rate(row.rate(row.baseline_median))} | {ratio} | {notes} |")
    lines += ["", "What each row compares (syncrouter vs baseline):"]
    lines += [f"- {row.key}: {row.syncrouter}  vs  {row.baseline}" for row in rows]
    return "\n".join(lines)


def document(env: dict, arguments: dict, rows: list[Row], failures: dict) -> dict:
    return {"environment": env, "arguments": arguments,
            "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
            "ratio": "syncrouter rows/s divided by baseline rows/s (medians)",
            "rows": {row.key: row.as_dict() for row in rows}, "failed_suites": failures}


def write_json(path: str, data: dict) -> None:
    with open(path, "w") as out:
        json.dump(data, out, indent=2, default=str)
