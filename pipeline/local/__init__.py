"""The local runner: one machine, LocalDagRunner, progress on the terminal, a run log."""
