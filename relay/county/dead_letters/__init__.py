"""Bookkeeping every Celery task shares: attempt counting and the dead-letter list."""
