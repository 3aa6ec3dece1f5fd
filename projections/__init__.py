"""Read models: tables folded from the log, their checkpoints, digests and reports."""
