"""Capture: turn every write of a registered model into an outbox row, atomically."""
