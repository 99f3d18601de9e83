"""Settings for every relay process, read once in the entry point and passed down.

Values come from environment variables prefixed ``RELAY_`` and, optionally, from a
TOML file named by ``RELAY_CONFIG`` (see ``relay.config.common``). Every field says its
unit, default and why. No other module reads ``os.environ``.

- ``CommonSettings`` (common.py): what both hosts read (data_dir, log level, time zone,
  login lockout, the config-file loading).
- ``EdgeSettings`` (edge.py): the township edge. Edge modules take this type.
- ``CountySettings`` (county.py): the county API, workers and portal. County and portal
  modules take this type.
- ``Settings``: both at once, for ``relay up`` (edge and county on one machine) and the
  CLI's shared entry. The RELAY_* names are the same in all of them.
"""

from __future__ import annotations

from typing import Any

from relay.config.common import CommonSettings
from relay.config.county import CountySettings, parse_sla_overrides
from relay.config.edge import EdgeSettings


class Settings(EdgeSettings, CountySettings):
    """All configuration of the edge, the county API and the workers."""


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once, in an entry point."""
    return Settings(**overrides)


__all__ = ["CommonSettings", "CountySettings", "EdgeSettings", "Settings", "load_settings",
           "parse_sla_overrides"]
