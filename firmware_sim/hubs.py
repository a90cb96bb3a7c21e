"""Centres that look like their users' world: their own time zone, the country code
their parcels' S10 numbers end in, read points named in their language, and the
delivery standards of the express services there.

The Chinese hub follows the spirit of China's express-service standard (GB/T 27917,
as secondary sources summarise it: same city within 24 h, other domestic cities
within 72 h). These figures are not claimed as official: they are the defaults of
`Hub.same_city_days` and `Hub.other_city_days`, expressed as the J+n working days
the rest of parceltrack uses (24 h ~ J+1, 72 h ~ J+3), and any scenario may set
others.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware_sim.standards import ServiceClass

DEFAULT_COUNTRY = "GB"  # of the parcels posted at centres that are not hubs


@dataclass(frozen=True, slots=True)
class Hub:
    """A centre's local colour; the scenario's `sites` must list `site`."""

    site: str
    name: str
    timezone: str  # IANA zone, e.g. Asia/Shanghai
    country: str  # ISO 3166 alpha-2 code that S10 numbers of parcels posted here end in
    language: str = "en"  # of its read points' descriptions (en or zh-CN)
    same_city_days: int = 1  # J+n for parcels this hub also delivers (24 h)
    other_city_days: int = 3  # J+n for parcels delivered elsewhere (72 h)
    slack: float = 1.5  # stage standards of its classes: nominal x site factor x slack

    @property
    def same_city_class(self) -> str:
        return f"{self.site.lower()}-same-city"

    @property
    def other_city_class(self) -> str:
        return f"{self.site.lower()}-other-city"

    def service_classes(self) -> tuple[ServiceClass, ServiceClass]:
        """Its two express classes; never drawn at random (share 0): a parcel posted
        here gets one by where it goes."""
        return (
            ServiceClass(
                self.same_city_class,
                f"Same-city express from {self.site}, J+{self.same_city_days} "
                f"({24 * self.same_city_days} h)",
                self.same_city_days,
                "EA",
                self.slack,
                0.0,
            ),
            ServiceClass(
                self.other_city_class,
                f"Express to other cities from {self.site}, J+{self.other_city_days} "
                f"({24 * self.other_city_days} h)",
                self.other_city_days,
                "EB",
                self.slack,
                0.0,
            ),
        )


# Shanghai: S10 numbers ending in CN, China Standard Time, read points named in Chinese.
CHINESE_HUB = Hub("PVG1", "上海邮件处理中心", "Asia/Shanghai", "CN", "zh-CN")
