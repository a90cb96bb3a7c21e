"""Request and response bodies, as the OpenAPI schema publishes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.security import Role
from api.tracking import Status
from parceltrack.alerts import AlertKind
from parceltrack.layout import Protocol, Stage, Zone

# Text fields: printable, no NUL (PostgreSQL text cannot hold it), bounded.
Text = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
LongText = Field(min_length=1, max_length=4000, pattern=r"^[^\x00]+$")


class UpuEvent(BaseModel):
    code: str = Field(description="UPU EMSEVT code, e.g. EDD")
    description: str


class Segment(BaseModel):
    """The conveyor between two read points on a known path the parcel is travelling on."""

    from_read_point: str
    from_description: str | None
    to_read_point: str
    to_description: str | None
    since: datetime
    expected_by: datetime | None = Field(description="by the stage standard, when one is set")


class Location(BaseModel):
    site: str
    site_name: str | None
    zone: str | None
    read_point: str
    description: str | None
    device: str
    time: datetime
    segment: Segment | None = Field(
        description="set while the parcel is between two read points on a known path"
    )


class TimelineEvent(BaseModel):
    time: datetime
    kind: str = Field(description="accepted (manifest), read or seen (scans)")
    site: str | None
    read_point: str | None
    zone: str | None
    description: str | None
    device: str | None
    upu_event: UpuEvent | None


class DeliveryPromise(BaseModel):
    delivery_days: int | None = Field(description="J+n working days of the service class")
    due: datetime | None = Field(description="acceptance + delivery_days working days")
    eta: datetime | None
    eta_source: str = Field(
        description="delivered, stage_standards (due + lateness against the stage "
        "standards) or unknown"
    )
    on_time: bool | None
    leaves_site_eta: datetime | None = Field(
        default=None,
        description="when the detection service expects the parcel at its current "
        "site's last stage (its parcel_eta table), when that service runs",
    )


class ParcelView(BaseModel):
    tracking_id: str
    status: Status
    service_class: str | None
    destination: str | None
    last_location: Location | None
    delivery: DeliveryPromise
    timeline: list[TimelineEvent]


class FeedbackIn(BaseModel):
    kind: Literal["complaint", "praise"]
    message: str = LongText
    contact: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    staff_id: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="the counter staff member it is about (GET /v1/staff lists them)",
    )
    counter_id: str | None = Field(
        default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$", description="the counter"
    )


class FeedbackReceipt(BaseModel):
    feedback_id: int
    tracking_id: str
    kind: str
    created_at: datetime
    deadline: datetime | None = Field(
        default=None, description="complaints: when the answer is due at the latest"
    )


class FeedbackAnswer(BaseModel):
    author: str
    at: datetime
    message: str


class FeedbackItem(BaseModel):
    feedback_id: int
    tracking_id: str
    kind: str
    message: str
    contact: str | None
    site_id: str | None
    state: Literal["open", "taken", "closed"]
    owner: str | None
    created_at: datetime
    taken_at: datetime | None
    first_answer_at: datetime | None
    closed_at: datetime | None
    seconds_to_first_answer: float | None
    staff_id: str | None = None
    counter_id: str | None = None
    deadline: datetime | None = Field(
        default=None, description="complaints: answer by then (the site's policy, 7 days)"
    )
    overdue: bool = Field(default=False, description="a complaint unanswered past its deadline")
    snapshot: dict[str, Any] = Field(description="the parcel view when the customer wrote")
    answers: list[FeedbackAnswer]


class FeedbackPage(BaseModel):
    items: list[FeedbackItem]
    next_cursor: int | None


class AnswerIn(BaseModel):
    message: str = LongText


class Alert(BaseModel):
    alert_id: int
    kind: str
    state: Literal["open", "acknowledged", "resolved"]
    site_id: str | None
    read_point_id: str | None
    device_id: str | None
    tracking_id: str | None
    opened_at: datetime
    detectable_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None
    details: dict[str, Any]
    assigned_to: str | None = Field(default=None, description="the controller it is assigned to")


class AlertKindLabel(BaseModel):
    kind: AlertKind = Field(description="as in an alert's `kind`")
    label: str = Field(description="what the control room and the dashboards call it")


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: int | None = Field(description="pass as `after` for the next page")


class Device(BaseModel):
    device_id: str
    site_id: str
    read_point_id: str | None
    kind: str
    online: bool
    last_seen: datetime | None
    reads_last_hour: int
    noreads_last_hour: int
    frames_bad: int | None
    reopens: int | None
    outbox_depth: int | None
    outbox_oldest_s: float | None
    agent_id: str | None
    agent_state: str | None


class ThroughputBucket(BaseModel):
    read_point_id: str
    bucket_start: datetime
    reads: int
    noreads: int


class Throughput(BaseModel):
    site_id: str
    bucket_seconds: int
    since: datetime
    until: datetime
    buckets: list[ThroughputBucket]


class SiteKpi(BaseModel):
    site_id: str
    day: str
    shift: str
    parcels_seen: int
    on_time_rate: float | None
    mis_sort_rate: float | None
    no_read_rate: float | None
    loss_rate: float | None
    alerts_opened: int
    alerts_acknowledged: int
    alerts_resolved: int
    time_to_ack_p50_s: float | None
    complaints: int
    time_to_first_answer_p50_s: float | None


class ReadPointKpi(BaseModel):
    site_id: str
    read_point_id: str
    stage: str | None
    day: str
    shift: str
    reads: int
    noreads: int
    no_read_rate: float | None
    dwell_p50_s: float | None
    dwell_p95_s: float | None


class StageKpi(BaseModel):
    site_id: str
    stage: str
    day: str
    shift: str
    parcels: int
    dwell_p50_s: float | None
    dwell_p95_s: float | None


class Kpis(BaseModel):
    since: datetime
    until: datetime
    sites: list[SiteKpi]
    read_points: list[ReadPointKpi]
    stages: list[StageKpi]


class ManifestRejection(BaseModel):
    row: int = Field(description="1-based data row number")
    tracking_id: str | None
    errors: list[str]


class ManifestReport(BaseModel):
    accepted: int
    rejected: list[ManifestRejection]


class ServiceClassIn(BaseModel):
    description: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f]*$")
    delivery_days: int = Field(ge=0, le=60)


class ServiceClass(ServiceClassIn):
    service_class: str


class _StageStandardFields(BaseModel):
    site_id: str = Text
    service_class: str = Text
    max_seconds: float = Field(gt=0, le=30 * 86400)


class StageStandardIn(_StageStandardFields):
    stage: Stage


class StageStandard(_StageStandardFields):
    # Rows stored before stages were a fixed set are shown as they are, not refused.
    stage: Stage | str


class SortPlanEntry(BaseModel):
    destination: str = Text
    chute_read_point_id: str = Text
    door_read_point_id: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$")


class SortPlanIn(BaseModel):
    effective_from: datetime
    entries: list[SortPlanEntry] = Field(min_length=1, max_length=10_000)


class SortPlan(BaseModel):
    sort_plan_id: int
    site_id: str
    version: int
    effective_from: datetime
    entries: list[SortPlanEntry]


class SiteIn(BaseModel):
    name: str = Text
    timezone: str = Field(default="UTC", max_length=64, pattern=r"^[A-Za-z0-9_/+-]+$")


class _ReadPointFields(BaseModel):
    site_id: str = Text
    description: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f]*$")
    position: int = Field(default=0, ge=0, le=1_000_000)
    next_read_point_id: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$")


class ReadPointIn(_ReadPointFields):
    zone: Zone
    stage: Stage


class ReadPoint(_ReadPointFields):
    read_point_id: str
    # Rows stored before zones and stages were fixed sets are shown as they are.
    zone: Zone | str
    stage: Stage | str
    successors: list[str] = Field(
        default_factory=list, description="every read point a parcel may reach next"
    )


class SuccessorsIn(BaseModel):
    successors: list[str] = Field(
        max_length=10_000, description="every read point a parcel may reach next (none: the end)"
    )


class Successors(SuccessorsIn):
    read_point_id: str


# Site settings: values are checked by the reference model, so the API refuses what a
# site file refuses, with the same words (422).
class MissingWindowIn(BaseModel):
    stage: str | None = Field(default=None, description="none: every stage of the site")
    service_class: str | None = Field(default=None, description="none: every class")
    window_s: float = Field(description="after the stage deadline, unseen this long: missing")


class MissingWindow(MissingWindowIn):
    site_id: str


class DeviceThresholdsIn(BaseModel):
    """Unset fields take their defaults."""

    silence_s: float | None = Field(default=None, description="quiet this long: silent")
    bin_s: float | None = None
    window_bins: int | None = None
    bins: int | None = None
    open_rate: float | None = Field(default=None, description="no-read share opening a spike")
    close_rate: float | None = None
    jump: float | None = None
    min_reads: int | None = None
    min_noreads: int | None = None


class DeviceThresholds(BaseModel):
    site_id: str
    silence_s: float
    bin_s: float
    window_bins: int
    bins: int
    open_rate: float
    close_rate: float
    jump: float
    min_reads: int
    min_noreads: int


class SiteTolerancesIn(BaseModel):
    skew_tolerance_s: float = Field(description="how far device clocks may disagree")
    duplicate_gap_s: float = Field(description="re-reads closer than this are duplicates")


class SiteTolerances(SiteTolerancesIn):
    site_id: str


class DeviceIn(BaseModel):
    site_id: str = Text
    read_point_id: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    kind: Protocol = Field(description="the protocol it speaks (the edge agent's driver)")
    description: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f]*$")
    settings: dict[str, str | int | float | bool] = Field(
        default_factory=dict, max_length=100, description="the driver's settings, as given"
    )


class ApiKeyIn(BaseModel):
    name: str = Text
    role: Role
    account: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="the partner's account (the manifest's account column); "
        "required for role partner, refused for every other role",
    )


class ApiKeyInfo(BaseModel):
    key_id: int
    name: str
    role: Role
    account: str | None = Field(default=None, description="a partner key's account")
    prefix: str = Field(description="first characters of the key, to recognise it")
    created_at: datetime
    revoked_at: datetime | None


class NewApiKey(ApiKeyInfo):
    key: str = Field(description="the secret; shown only in this response")


class Health(BaseModel):
    status: str
    database: bool
    broker: bool
