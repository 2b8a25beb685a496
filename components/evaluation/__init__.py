"""Evaluation: caption metrics, the blessing gate and the demo gallery."""
