"""The edge's HTTP client to the county: one place for TLS trust and the credential."""

from __future__ import annotations

import ssl

import httpx

from relay.config import EdgeSettings


def county_client(settings: EdgeSettings, *, timeout: float | None = None) -> httpx.Client:
    """An httpx client for ``settings.county_url``.

    HTTPS is verified against the system's CAs, or against ``edge_county_ca_file`` when
    the county uses a private CA (common for a 医共体 intranet); verification is never
    switched off.
    """
    verify: ssl.SSLContext | bool = True
    if settings.edge_county_ca_file:
        verify = ssl.create_default_context(cafile=str(settings.edge_county_ca_file))
    headers = {"User-Agent": "county-relay-edge"}
    if settings.edge_site_token:
        headers["Authorization"] = f"Bearer {settings.edge_site_token}"
    return httpx.Client(base_url=settings.county_url, verify=verify, headers=headers,
                        timeout=timeout if timeout is not None else settings.forward_timeout)
