"""Helpers shared by tests/ and bench/: real pipeline artifacts built small and fast."""
