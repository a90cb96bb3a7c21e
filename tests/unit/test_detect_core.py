import numpy as np

from detect.core import ParcelState, overdue

HAS_NEXT = np.array([True, True, False, False])  # rp 2 is a door; rp 3 is "unknown"
WINDOW = np.array([10.0, 20.0, 10.0, 10.0])


def _state(*sightings: tuple[str, int, float]) -> ParcelState:
    state = ParcelState(capacity=2)
    ids = [s[0] for s in sightings]
    state.update(
        ids,
        np.array([s[1] for s in sightings], dtype=np.int32),
        np.array([s[2] for s in sightings]),
    )
    return state


def test_latest_sighting_wins_whatever_the_order() -> None:
    """Out-of-order sightings in a batch keep the newest per parcel."""
    state = _state(("A", 1, 105.0), ("A", 0, 100.0), ("B", 0, 50.0))
    assert state.read_point[state.slots["A"]] == 1
    assert state.last_seen[state.slots["A"]] == 105.0


def test_older_sightings_in_a_later_batch_do_not_move_a_parcel_back() -> None:
    """A late-arriving older read does not overwrite a newer one."""
    state = _state(("A", 1, 105.0))
    state.update(["A"], np.array([0], dtype=np.int32), np.array([100.0]))
    assert state.read_point[state.slots["A"]] == 1


def test_overdue_uses_the_window_of_the_current_read_point() -> None:
    """A parcel is overdue once the window of its read point has passed, not before."""
    state = _state(("A", 0, 100.0), ("B", 1, 100.0))
    assert overdue(state, HAS_NEXT, WINDOW, 109.0).tolist() == [False, False]
    assert overdue(state, HAS_NEXT, WINDOW, 111.0).tolist() == [True, False]
    assert overdue(state, HAS_NEXT, WINDOW, 121.0).tolist() == [True, True]


def test_parcels_at_their_last_read_point_are_never_overdue() -> None:
    """A parcel at an outbound door has nowhere further to be seen."""
    state = _state(("A", 2, 0.0))
    assert not overdue(state, HAS_NEXT, WINDOW, 1e9).any()


def test_state_grows_past_its_initial_capacity() -> None:
    """Adding more parcels than the capacity grows the arrays and keeps earlier ones."""
    ids = [f"P{i}" for i in range(1000)]
    state = _state(*[(t, 0, float(i)) for i, t in enumerate(ids)])
    assert len(state) == 1000 and state.last_seen[state.slots["P999"]] == 999.0
    assert state.last_seen[state.slots["P0"]] == 0.0
