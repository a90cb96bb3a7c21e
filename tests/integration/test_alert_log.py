import psycopg

from parceltrack.alerts import AlertKind


def test_every_alert_change_is_logged_in_order(db_dsn: str) -> None:
    """Opening, acknowledging and resolving an alert leaves three ordered alert_events."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        (alert_id,) = conn.execute(
            "INSERT INTO alerts (fingerprint, kind, tracking_id) "
            "VALUES (%s, %s, 'RR473124829GB') RETURNING alert_id",
            (f"{AlertKind.DELAY}:RR473124829GB", AlertKind.DELAY),
        ).fetchone() or (None,)
        conn.execute(
            "UPDATE alerts SET state = 'acknowledged', acked_by = 'ctl' WHERE alert_id = %s",
            (alert_id,),
        )
        conn.execute("UPDATE alerts SET state = 'resolved' WHERE alert_id = %s", (alert_id,))
        rows = conn.execute(
            "SELECT change, alert->>'state' FROM alert_events WHERE alert_id = %s "
            "ORDER BY event_id",
            (alert_id,),
        ).fetchall()
    assert rows == [("opened", "open"), ("acknowledged", "acknowledged"), ("resolved", "resolved")]


def test_alert_changes_are_notified(db_dsn: str) -> None:
    """A listener on parceltrack_alerts hears the event id of each change."""
    with (
        psycopg.connect(db_dsn, autocommit=True) as listener,
        psycopg.connect(db_dsn, autocommit=True) as writer,
    ):
        listener.execute("LISTEN parceltrack_alerts")
        writer.execute(
            "INSERT INTO alerts (fingerprint, kind) VALUES ('x', %s)", (AlertKind.MISSING,)
        )
        notes = list(listener.notifies(timeout=5, stop_after=1))
        (latest,) = writer.execute("SELECT max(event_id) FROM alert_events").fetchone() or (0,)
    assert [n.payload for n in notes] == [str(latest)]
