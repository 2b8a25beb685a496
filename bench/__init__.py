"""Benchmarks of the captioner pipeline's components."""
