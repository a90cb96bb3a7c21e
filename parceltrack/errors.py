"""One exception tree for the whole product, so callers can catch by meaning."""

from typing import Any


class ParceltrackError(Exception):
    """Base of every error parceltrack raises on purpose."""


class InvalidTrackingNumber(ParceltrackError, ValueError):
    """A tracking number that is not a valid UPU S10 identifier; the message says why.

    `template` and `params` keep the message apart from its values, so the API can
    say the same in the reader's language (the template is a gettext message id).
    """

    def __init__(self, template: str, **params: Any) -> None:
        super().__init__(template.format(**params))
        self.template = template
        self.params = params


class WireFormatError(ParceltrackError, ValueError):
    """An MQTT payload that does not follow wire format v1; the message says why."""


class ConfigError(ParceltrackError, ValueError):
    """A configuration file or value that is wrong; the message names the key."""


class ServiceError(ParceltrackError, RuntimeError):
    """A private PostgreSQL or Mosquitto instance could not be started or reached."""
