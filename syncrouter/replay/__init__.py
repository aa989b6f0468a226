"""Replay: apply incoming transactions to the real tables, exactly once, in order."""
