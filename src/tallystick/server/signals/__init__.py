"""Signals: bulk ingestion, idempotency, rating against pricing lines, and listing."""
