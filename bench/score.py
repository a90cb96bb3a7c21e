"""Scoring alerts against ground truth: precision, recall and latency per kind.

A truth is (kind, subject, detectable_at): the parcel or device an alert of that
kind should be raised for, and from when a detector could know. An alert is
(kind, subject, opened_at). The first alert of a kind for a true subject is a hit
(its latency is opened_at - detectable_at); any other alert is a false positive
(a second alert for the same subject and kind included: it would reach the control
room twice). A truth without an alert is a miss.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Truth:
    kind: str
    subject: str
    detectable_at: float


@dataclass(frozen=True, slots=True)
class Raised:
    kind: str
    subject: str
    opened_at: float


@dataclass(frozen=True, slots=True)
class KindScore:
    kind: str
    truths: int
    alerts: int
    hits: int
    latencies: tuple[float, ...] = field(default=(), repr=False)

    @property
    def precision(self) -> float:
        return self.hits / self.alerts if self.alerts else (1.0 if not self.truths else 0.0)

    @property
    def recall(self) -> float:
        return self.hits / self.truths if self.truths else 1.0

    def latency(self, q: float) -> float:
        """Quantile q of the latencies of hits (NaN without hits)."""
        return float(np.quantile(self.latencies, q)) if self.latencies else float("nan")


def score(
    truths: Iterable[Truth],
    alerts: Iterable[Raised],
    kinds: Iterable[str],
    ignore: frozenset[tuple[str, str]] = frozenset(),
) -> list[KindScore]:
    """Per kind, in the order given; kinds absent from both sides score 0 of 0.

    `ignore` holds (kind, subject) pairs nobody could judge (their evidence was
    destroyed): alerts for them count neither way.
    """
    expected: dict[tuple[str, str], float] = {}
    for t in truths:
        key = (t.kind, t.subject)
        expected[key] = min(expected.get(key, t.detectable_at), t.detectable_at)
    first: dict[tuple[str, str], float] = {}
    count: dict[str, int] = {}
    for a in alerts:
        if (a.kind, a.subject) in ignore:
            continue
        count[a.kind] = count.get(a.kind, 0) + 1
        key = (a.kind, a.subject)
        if key in expected and key not in first:
            first[key] = a.opened_at
        elif key in expected:
            first[key] = min(first[key], a.opened_at)
    out = []
    for kind in kinds:
        hits = [(k, at) for k, at in first.items() if k[0] == kind]
        out.append(
            KindScore(
                kind,
                truths=sum(1 for k in expected if k[0] == kind),
                alerts=count.get(kind, 0),
                hits=len(hits),
                latencies=tuple(sorted(at - expected[k] for k, at in hits)),
            )
        )
    return out
