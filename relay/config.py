"""Settings for every relay process, read once in the entry point and passed down.

Values come from environment variables prefixed ``RELAY_`` and, optionally, from a
TOML file named by ``RELAY_CONFIG``. Every field says its unit, default and why.
No other module reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """All configuration of the edge, the county API and the workers."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    # --- shared -----------------------------------------------------------------
    data_dir: Path = Field(
        Path("./var"),
        description="Folder for all embedded-default state (SQLite files, local object "
        "folder, edge spool, embedded broker). Default ./var, so that `relay users "
        "create` run in the same directory sees the database `relay up` uses.",
    )
    log_level: str = Field("INFO", description="Python log level name.")
    timezone: str = Field(
        "Asia/Shanghai",
        description="Zone in which times are shown; everything is stored in UTC.",
    )

    # --- county backing services (one URL each) ----------------------------------
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the index, e.g. postgresql+psycopg://relay@db/relay. "
        "Default: SQLite file <data_dir>/county.db (one machine only).",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker, e.g. amqp://guest:guest@127.0.0.1:5672/%2F. Default: "
        "kombu's filesystem transport under <data_dir>/broker (one machine only).",
    )
    store_url: str | None = Field(
        None,
        description="Object store: s3://ACCESS:SECRET@HOST:PORT/BUCKET (add ?secure=1 for "
        "HTTPS) for MinIO/S3, or file:///path. Default: file://<data_dir>/objects.",
    )
    queue_prefix: str = Field(
        "relay",
        description="Prefix of the Celery queue names, so that two deployments (or two "
        "test runs) can share one broker without taking each other's tasks.",
    )

    # --- county HTTP -------------------------------------------------------------
    county_host: str = Field("127.0.0.1", description="Address the county API binds.")
    county_port: int = Field(8000, description="TCP port of the county API.")
    token_ttl_hours: float = Field(
        12.0,
        description="Lifetime of a bearer token from /api/auth/token, in hours: one "
        "reading shift, so a token left on a shared reading-room PC does not live on.",
    )
    max_instance_bytes: int = Field(
        2 * 1024**3,
        description="Largest single DICOM instance the ingest endpoint accepts, in bytes "
        "(default 2 GiB); larger bodies get 413 instead of exhausting memory.",
    )

    # --- edge --------------------------------------------------------------------
    edge_host: str = Field("127.0.0.1", description="Address the edge DICOM SCP binds.")
    edge_port: int = Field(11112, description="TCP port of the edge DICOM SCP.")
    edge_ae_title: str = Field("RELAY_EDGE", description="AE title of the edge SCP.")
    edge_site: str = Field(
        "demo-township", description="Name of this township site, as registered at the county."
    )
    edge_site_token: str | None = Field(
        None,
        description="Credential issued by the county for this site (`relay sites create`). "
        "Required to forward.",
    )
    county_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the county API the edge forwards to."
    )
    edge_max_pdu: int = Field(
        0,
        description="Maximum PDU size the edge SCP accepts, in bytes; 0 means unlimited, "
        "which lets senders use large PDUs and saves per-PDU overhead.",
    )
    edge_network_timeout: float = Field(
        60.0, description="Seconds of silence on an association before the edge aborts it."
    )
    forward_retry_min: float = Field(
        1.0, description="First retry delay after a failed upload, in seconds."
    )
    forward_retry_max: float = Field(
        300.0,
        description="Longest retry delay, in seconds. Uploads are retried forever: an "
        "acknowledged instance is never given up.",
    )
    forward_timeout: float = Field(
        120.0,
        description="Seconds an upload may wait on each step (connect, each read, each "
        "write) before it is abandoned and retried; httpx applies it per step, not to the "
        "whole request, so a slow but moving upload is not cut off.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("RELAY_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    # --- derived values ------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'county.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Folder of the embedded filesystem broker (used only when broker_url is unset)."""
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"file://{(self.data_dir / 'objects').resolve()}"

    @property
    def edge_spool_dir(self) -> Path:
        return (self.data_dir / "edge").resolve()

    @property
    def county_base_url(self) -> str:
        return f"http://{self.county_host}:{self.county_port}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once, in an entry point."""
    return Settings(**overrides)
