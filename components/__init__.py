"""Custom TFX components and module code of the captioner pipeline."""
