"""Ingest accounting, exported for Prometheus and kept as plain numbers so logs and
tests can check the identities:

    messages received = committed + dead-lettered + in flight
    events received   = written + duplicates

(events are counted once their message validated; a dead-lettered message's
events are in its dead letter). Any difference is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("parceltrack_ingest_messages_total", "MQTT messages by outcome", ["outcome"])
EVENTS = Counter("parceltrack_ingest_events_total", "Scan events by outcome", ["outcome"])
IN_FLIGHT = Gauge(
    "parceltrack_ingest_messages_in_flight", "Received, not yet committed or acked", ["worker"]
)
DB_OUTAGES = Counter("parceltrack_ingest_db_outages_total", "Commits that found the DB away")
BATCH_EVENTS = Histogram(
    "parceltrack_ingest_batch_events", "Events per committed batch",
    buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000),
)  # fmt: skip
BATCH_MESSAGES = Histogram(
    "parceltrack_ingest_batch_messages", "MQTT messages per committed batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)  # fmt: skip
COMMIT_SECONDS = Histogram(
    "parceltrack_ingest_commit_seconds", "Time to write and commit one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)  # fmt: skip
LAG = Histogram(
    "parceltrack_ingest_lag_seconds", "Read time to commit, newest event of each batch",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600),
)  # fmt: skip
# Per scan-batch message (its newest event); fine buckets so percentiles can be read.
READ_TO_COMMIT = Histogram(
    "parceltrack_ingest_read_to_commit_seconds", "Read time of a message's newest event to commit",
    buckets=(
        0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4,
        0.5, 0.6, 0.75, 0.9, 1.0, 1.25, 1.5, 2, 3, 5, 10, 30, 60,
    ),
)  # fmt: skip


@dataclass
class Accounts:
    messages_received: int = 0
    messages_committed: int = 0
    messages_dead: int = 0
    events_received: int = 0
    events_written: int = 0
    events_duplicate: int = 0
    health_reports: int = 0
    agent_statuses: int = 0

    @property
    def messages_in_flight(self) -> int:
        return self.messages_received - self.messages_committed - self.messages_dead

    def balanced(self) -> bool:
        """The event identity holds (it holds after every commit, not only when idle)."""
        return self.events_received == self.events_written + self.events_duplicate

    def summary(self) -> str:
        return (
            f"messages received={self.messages_received} committed={self.messages_committed} "
            f"dead-lettered={self.messages_dead} in-flight={self.messages_in_flight}; "
            f"events received={self.events_received} written={self.events_written} "
            f"duplicates={self.events_duplicate}; health={self.health_reports} "
            f"status={self.agent_statuses}"
        )
