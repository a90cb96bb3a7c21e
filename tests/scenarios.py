"""Scenario configurations that several test modules generate from."""

from __future__ import annotations

from firmware_sim.scenario import FaultRates, ScenarioConfig

RATES = FaultRates(
    missort=0.03, delay=0.02, lost=0.02, noread=0.04, recirculation=0.03, misroute=0.02
)
# Every fault kind, with one RFID site: the file the determinism tests compare.
CONFIG = ScenarioConfig(seed=5, parcels=3000, faults=RATES, rfid_sites=("MAN1",))
