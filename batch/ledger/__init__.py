"""The append-only ledger, its snapshot and checkpoints."""
