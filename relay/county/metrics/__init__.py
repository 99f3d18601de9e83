"""Prometheus metrics, read from the shared database and broker at scrape time."""
