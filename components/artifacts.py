"""Custom artifact types of the captioner's components.

TYPE_NAME is '<package>.<Class>': Kubeflow's TFX entrypoint recovers the
Python class of a custom artifact by importing its type name, and KFP v2 allows
exactly one dot in it. `components/__init__.py` resolves these names lazily.
"""
from tfx.types import artifact


class IngestionReport(artifact.Artifact):
  """Reject report of an ingestion: rejects.jsonl and summary.json (components/ingestion/example_gen.py)."""
  TYPE_NAME = 'components.IngestionReport'


class ImageFeatures(artifact.Artifact):
  """The frozen backbone's features of every image, and the backbone itself (components/encoder/features_artifact.py)."""
  TYPE_NAME = 'components.ImageFeatures'


class CaptionEvaluation(artifact.Artifact):
  """Caption-quality report of one CaptionEvaluator run: metrics.json and captions.jsonl."""
  TYPE_NAME = 'components.CaptionEvaluation'


class CaptionGallery(artifact.Artifact):
  """A static HTML gallery of generated captions: index.html and thumbs/."""
  TYPE_NAME = 'components.CaptionGallery'
