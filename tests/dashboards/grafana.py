"""Expansion of the Grafana PostgreSQL macros the dashboards use, as Grafana does it,
so the tests can run every panel's SQL against the real schema."""

from __future__ import annotations

import re
from datetime import datetime

_INTERVAL_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(interval: str) -> int:
    match = re.fullmatch(r"'?(\d+)([smhd])'?", interval.strip())
    if not match:
        raise ValueError(f"unsupported interval {interval!r}")
    return int(match.group(1)) * _INTERVAL_S[match.group(2)]


def expand(
    sql: str,
    start: datetime,
    end: datetime,
    interval: str,
    variables: dict[str, list[str]],
    timescale: bool,
) -> str:
    """The SQL Grafana would send for this time range, interval and variables."""
    out = sql.replace("$__interval", interval)
    out = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        out,
    )

    def group(m: re.Match[str]) -> str:
        column, step = m.group(1).strip(), _seconds(m.group(2))
        if timescale:  # the datasource's "TimescaleDB" switch makes Grafana use time_bucket
            return f"time_bucket('{step}s', {column}) AS \"time\""
        return f'floor(extract(epoch from {column})/{step})*{step} AS "time"'

    out = re.sub(r"\$__timeGroupAlias\(([^,]+),([^)]+)\)", group, out)
    out = out.replace("$__timeFrom()", f"'{start.isoformat()}'")
    out = out.replace("$__timeTo()", f"'{end.isoformat()}'")
    for name, values in variables.items():
        quoted = ",".join("'" + v.replace("'", "''") + "'" for v in values)
        out = re.sub(rf"\${name}\b", quoted, out)
    if "$" in re.sub(r"\$\$", "", out):
        raise ValueError(f"unexpanded macro or variable in: {out}")
    return out
