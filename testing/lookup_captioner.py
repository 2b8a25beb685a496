"""A SavedModel captioner with a fixed caption per image, for exact evaluator, gallery and pusher tests.

It honours the serving contract of components/features.py (both signatures,
string and float32 outputs of shape [batch]) but its caption for an image is a
table lookup keyed by the image bytes, so "good", "bad" and "slightly worse"
captioners score exactly what a test expects. For a captioner with the real
serving graph, use testing.tiny_model.
"""
from typing import List, Mapping, Optional

import tensorflow as tf
from tfx.types import standard_artifacts

from components import features
from components.evaluation import captioning
from components.training import stages as stages_lib

LOG_PROBABILITY = -1.5  # what it reports for every caption


class LookupCaptioner(tf.Module):
  """caption(images) = the table's caption of each image's bytes, '' for an unknown image."""

  def __init__(self, captions_by_image: Mapping[bytes, str]):
    super().__init__()
    keys = list(captions_by_image)
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.constant([captions_by_image[k] for k in keys])),
        default_value='')

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.IMAGES_INPUT)])
  def caption(self, images):
    return {features.CAPTION_OUTPUT: self.table.lookup(images),  # string [batch]
            features.LOG_PROBABILITY_OUTPUT: tf.fill(tf.shape(images), LOG_PROBABILITY)}  # float32 [batch]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=features.EXAMPLES_INPUT)])
  def caption_examples(self, examples):
    parsed = tf.io.parse_example(
        examples, {features.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return self.caption(parsed[features.IMAGE_KEY])


def export_lookup_captioner(uri: str, captions_by_image: Mapping[bytes, str], model_id: int,
                            stages: Optional[List[str]] = None) -> standard_artifacts.Model:
  """Saves a LookupCaptioner as a Trainer's Model artifact at `uri` (SavedModel in <uri>/Format-Serving),
  recording `stages` as its training stages as the Trainer does (none recorded if None)."""
  model = standard_artifacts.Model()
  model.uri = str(uri)
  model.id = model_id
  module = LookupCaptioner(captions_by_image)
  tf.saved_model.save(module, captioning.serving_model_dir(model), signatures={
      features.CAPTION_SIGNATURE: module.caption.get_concrete_function(),
      features.EXAMPLES_SIGNATURE: module.caption_examples.get_concrete_function(),
  })
  if stages is not None:
    stages_lib.write(captioning.serving_model_dir(model), stages)
  return model
