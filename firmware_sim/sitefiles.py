"""The simulator's centres as site files (docs/site-files.md): what an operator would
write for them, so the demo and the tests put them in force with `parceltrack site
apply`, the operator's own command."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from firmware_sim.clock import PlaybackClock
from firmware_sim.scenario import Scenario
from storage.model import ReferenceData
from storage.sitetext import render_site


def site_data(scenario: Scenario, clock: PlaybackClock | None = None) -> list[ReferenceData]:
    """One site's reference data per centre, without the manifest (a site file holds no
    parcels), times in wall-clock terms through `clock`."""
    data = scenario.reference_data(clock)
    out = []
    for site in data.sites:
        s = site.site_id
        standards = [x for x in data.stage_standards if x.site_id == s]
        classes = {x.service_class for x in standards}
        out.append(
            replace(
                data,
                sites=(site,),
                read_points=tuple(r for r in data.read_points if r.site_id == s),
                devices=tuple(d for d in data.devices if d.site_id == s),
                service_classes=tuple(
                    c for c in data.service_classes if c.service_class in classes
                ),
                stage_standards=tuple(standards),
                sort_plans=tuple(p for p in data.sort_plans if p.site_id == s),
                manifest=(),
            )
        )
    return out


def write_site_files(
    scenario: Scenario, folder: Path, clock: PlaybackClock | None = None
) -> list[Path]:
    """Write `<site>.toml` and `<site>-sortplan.csv` per centre; the TOML paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for data in site_data(scenario, clock):
        site = data.sites[0].site_id
        texts = render_site(data, f"{site}-sortplan.csv")
        for name, text in texts.items():
            (folder / (f"{site}.toml" if name == "site" else name)).write_text(text)
        written.append(folder / f"{site}.toml")
    return written
