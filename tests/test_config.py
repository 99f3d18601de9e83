"""The settings split: the edge's and the county's fields meet only in the common base, and
the combined ``Settings`` (relay up, the CLI) still reads every RELAY_* variable and TOML key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from relay.config import CommonSettings, CountySettings, EdgeSettings, Settings


def test_edge_and_county_share_only_the_common_fields() -> None:
    edge, county, common = (set(c.model_fields) for c in (EdgeSettings, CountySettings, CommonSettings))
    assert edge & county == common
    assert common == {"data_dir", "log_level", "timezone", "login_max_failures", "login_lockout_minutes"}
    assert "database_url" not in edge and "edge_port" not in county


def test_combined_settings_has_every_field_of_both() -> None:
    assert set(Settings.model_fields) == set(EdgeSettings.model_fields) | set(CountySettings.model_fields)
    for cls in (EdgeSettings, CountySettings):
        for name, field in cls.model_fields.items():
            assert Settings.model_fields[name].default == field.default, name


def test_env_and_toml_reach_each_class(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "relay.toml"
    toml.write_text('edge_site = "east-township"\nsla_stat_minutes = 20.0\n', encoding="utf-8")
    monkeypatch.setenv("RELAY_CONFIG", str(toml))
    monkeypatch.setenv("RELAY_EDGE_PORT", "11999")
    monkeypatch.setenv("RELAY_QUEUE_PREFIX", "east")
    monkeypatch.setenv("RELAY_TIMEZONE", "UTC")
    edge, county, both = EdgeSettings(), CountySettings(), Settings()
    assert (edge.edge_port, edge.edge_site, edge.timezone) == (11999, "east-township", "UTC")
    assert (county.queue_prefix, county.sla_stat_minutes, county.timezone) == ("east", 20.0, "UTC")
    assert (both.edge_port, both.edge_site, both.queue_prefix, both.sla_stat_minutes) == (
        11999, "east-township", "east", 20.0)


def test_validators_stay_with_their_host() -> None:
    with pytest.raises(ValidationError, match="RELAY_SLA_OVERRIDES"):
        CountySettings(sla_overrides="ECG:soon=5")
    with pytest.raises(ValidationError, match="RELAY_SLA_OVERRIDES"):
        Settings(sla_overrides="ECG:soon=5")
    with pytest.raises(ValidationError):
        EdgeSettings(edge_max_pdu=1)
    assert Settings(sla_overrides="ECG:stat=10").sla_override_minutes == {("ECG", "stat"): 10.0}
