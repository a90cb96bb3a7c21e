import time

import psycopg

from detect.service import Detector, DetectSettings


def test_detector_starts_on_an_empty_database_and_picks_up_a_layout_later(db_dsn: str) -> None:
    """Before any layout is loaded the detector ticks idle; a layout loaded later is used."""
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        d = Detector(DetectSettings(dsn=db_dsn))
        d.start(conn, time.time())
        assert d.step(conn, time.time()) == []
        conn.execute("INSERT INTO sites (site_id, name) VALUES ('A1', 'A')")
        conn.execute(
            "INSERT INTO read_points (read_point_id, site_id, zone, stage, position) "
            "VALUES ('A1-IND1', 'A1', 'induction', 'induction', 1)"
        )
        d.reload(conn, time.time())
        assert d.engine is not None and d.engine.ref.read_points == ("A1-IND1",)
