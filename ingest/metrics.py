"""Ingest accounting: messages received = written + dead-lettered + in flight; events
received = written + duplicates. Exported for Prometheus and kept as plain numbers
so logs and tests can check the identities."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Histogram

MESSAGES = Counter("parceltrack_ingest_messages_total", "MQTT messages by outcome", ["outcome"])
EVENTS = Counter("parceltrack_ingest_events_total", "Scan events by outcome", ["outcome"])
BATCH_EVENTS = Histogram(
    "parceltrack_ingest_batch_events", "Events per committed batch",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000),
)  # fmt: skip
LAG = Histogram(
    "parceltrack_ingest_lag_seconds", "Read time to commit, newest event of each batch",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)  # fmt: skip


@dataclass
class Accounts:
    messages_received: int = 0
    messages_committed: int = 0
    messages_dead: int = 0
    events_received: int = 0
    events_written: int = 0
    events_duplicate: int = 0

    @property
    def messages_in_flight(self) -> int:
        return self.messages_received - self.messages_committed - self.messages_dead

    def balanced(self) -> bool:
        """The identities hold once nothing is in flight."""
        return self.events_received == self.events_written + self.events_duplicate

    def summary(self) -> str:
        return (
            f"messages received={self.messages_received} committed={self.messages_committed} "
            f"dead-lettered={self.messages_dead} in-flight={self.messages_in_flight}; "
            f"events received={self.events_received} written={self.events_written} "
            f"duplicates={self.events_duplicate}"
        )
