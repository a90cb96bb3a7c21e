"""Settings read once at the process edge and passed down as small frozen objects."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from parceltrack.errors import ConfigError


class Settings(BaseSettings):
    """Environment of every service: PARCELTRACK_DSN, PARCELTRACK_MQTT_URL, ..."""

    model_config = SettingsConfigDict(env_prefix="PARCELTRACK_", frozen=True)

    dsn: str = "postgresql://postgres@127.0.0.1:5432/parceltrack"
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    # PARCELTRACK_API_ADMIN_KEY: registered as an admin API key when the API starts.
    api_admin_key: SecretStr | None = None
    # Public lookups per client: PARCELTRACK_API_RATE_PER_S on average, API_BURST at once.
    api_rate_per_s: float = 5.0
    api_burst: float = 20.0
    mqtt_ca_file: str | None = None  # CA bundle for mqtts:// when not the system one
    # PARCELTRACK_LANGUAGE: pages and messages when neither ?lang= nor Accept-Language
    # names a supported language (en or zh-CN).
    language: str = "en"
    # PARCELTRACK_READ_DSN: a streaming replica for the API's reads (lookups, KPIs, pages);
    # writes stay on PARCELTRACK_DSN. Reads leave it when it lags more than the bound.
    read_dsn: str | None = None
    replica_max_lag_s: float = 2.0

    def broker(self, url: str | None = None) -> BrokerAddress:
        """The broker address with its TLS settings: every process connects through this.
        `url` names another broker than PARCELTRACK_MQTT_URL (an agent's TOML does);
        the CA file applies to it all the same."""
        return BrokerAddress.from_url(self.mqtt_url if url is None else url, self.mqtt_ca_file)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where an MQTT client connects, parsed from mqtt://user:password@host:port."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False  # mqtts://: verify the broker against the system CAs or `ca_file`
    ca_file: str | None = None

    @classmethod
    def from_url(cls, url: str, ca_file: str | None = None) -> BrokerAddress:
        """Parse mqtt://user:password@host:1883 or mqtts://...:8883 (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
            raise ConfigError(
                "PARCELTRACK_MQTT_URL must look like mqtt://host:1883 or mqtts://host:8883, "
                f"got {_redact(url)!r}"
            )
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            ca_file=ca_file,
        )

    def __repr__(self) -> str:  # never show the password in logs
        return (
            f"BrokerAddress(host={self.host!r}, port={self.port}, "
            f"username={self.username!r}, tls={self.tls})"
        )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
