"""Collecting numbers and printing them as plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    suite: str
    measure: str
    value: str
    target: str = ""
    verdict: str = ""  # "PASS", "MISS", "" (informational), "FAIL" (broken run)
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        suite: str,
        measure: str,
        value: str,
        target: str = "",
        ok: bool | None = None,
        note: str = "",
    ) -> None:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        self.rows.append(Row(suite, measure, value, target, verdict, note))

    def fail(self, suite: str, measure: str, note: str) -> None:
        self.rows.append(Row(suite, measure, "-", "", "FAIL", note))

    def as_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "details": self.details}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A plain-text table; columns whose index is in `right` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    def line(cells: Sequence[str]) -> str:
        parts = []
        for index, cell in enumerate(cells):
            parts.append(cell.rjust(widths[index]) if index in right else cell.ljust(widths[index]))
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def summary(report: Report) -> str:
    rows = [[r.suite, r.measure, r.value, r.target, r.verdict, r.note] for r in report.rows]
    return table(["bench", "measure", "value", "target", "result", "notes"], rows, right=(2,))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"
