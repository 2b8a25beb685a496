"""Custom TFX components and module code of the captioner pipeline."""
import importlib

# Artifact classes reachable as `components.<Class>`, the form their TYPE_NAME
# takes (see components/artifacts.py). Resolved on first use so that importing
# a light module such as components.names does not import TFX.
_ARTIFACTS = ('IngestionReport', 'ImageFeatures', 'CaptionEvaluation', 'CaptionGallery')


def __getattr__(name):
  if name in _ARTIFACTS:
    return getattr(importlib.import_module('components.artifacts'), name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
