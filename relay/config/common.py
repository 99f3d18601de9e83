"""The settings both hosts read: state folder, logging, time zone, logins, config loading.

Values come from environment variables prefixed ``RELAY_`` and, optionally, from a
TOML file named by ``RELAY_CONFIG``. Every field says its unit, default and why.
No other module reads ``os.environ``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class CommonSettings(BaseSettings):
    """What the edge and the county both read; each host's class adds its own fields."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

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

    # --- logins (the county's portal and the edge's technician page) -------------
    login_max_failures: int = Field(
        5, description="Wrong passwords in a row after which a login is locked (guessing defence).")
    login_lockout_minutes: float = Field(
        15.0, description="Minutes a login stays locked after too many wrong passwords.")

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
