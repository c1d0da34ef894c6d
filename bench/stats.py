"""Small statistics and table helpers."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile, linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def p90(values: Sequence[float]) -> float:
    return percentile(values, 90)


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def summary_ms(values_s: Sequence[float]) -> dict[str, float | int]:
    return {
        "n": len(values_s),
        "median_ms": round(median(values_s) * 1000, 3),
        "p90_ms": round(p90(values_s) * 1000, 3),
        "p95_ms": round(p95(values_s) * 1000, 3),
        "min_ms": round(min(values_s) * 1000, 3) if values_s else float("nan"),
        "max_ms": round(max(values_s) * 1000, 3) if values_s else float("nan"),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first, *rest = row
        return "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
