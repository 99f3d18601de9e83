"""County store: ingest, index, reading queue, workers."""
