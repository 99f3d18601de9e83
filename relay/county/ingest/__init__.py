"""Ingest: an edge uploads one instance; the county verifies, stores and indexes it."""
