"""A SavedModel captioner with a fixed caption per image, for exact evaluator, gallery and pusher tests.

It honours the serving contract of components/names.py (both signatures,
string and float32 outputs of shape [batch]) but its caption for an image is a
table lookup keyed by the image bytes, so "good", "bad" and "slightly worse"
captioners score exactly what a test expects. For a captioner with the real
serving graph, use testing.tiny_model.

Given attention maps, it stands in for an attention model: its signatures also
answer names.ATTENTION_OUTPUT, float32 [batch, max_length, grid_h, grid_w]
with static grid_h, grid_w as the contract says, looked up like the caption
(zeros for an unknown image); `focus_maps` builds maps that honour the contract.
"""
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tfx.types import standard_artifacts

from components import config as config_lib
from components import names
from components.evaluation import captioning
from components.training import stages as stages_lib

LOG_PROBABILITY = -1.5  # what it reports for every caption


def focus_maps(caption: str, cells: Sequence[Tuple[int, int]], grid: Tuple[int, int],
               max_length: int) -> np.ndarray:
  """float32 [max_length, grid_h, grid_w] as an attention model answers it for `caption`: word t's
  weight all on cells[t] (row, column), each row summing to 1, rows after the last word 0."""
  words = caption.split()
  if len(cells) != len(words) or len(words) > max_length:
    raise ValueError(f'{len(cells)} cells for the {len(words)} words of {caption!r} (max_length {max_length}).')
  maps = np.zeros((max_length, *grid), np.float32)
  for t, (row, column) in enumerate(cells):
    maps[t, row, column] = 1.0
  return maps


class LookupCaptioner(tf.Module):
  """caption(images) = the table's caption of each image's bytes, '' for an unknown image; with
  `attention_by_image`, also the table's attention maps, zeros for an unknown image."""

  def __init__(self, captions_by_image: Mapping[bytes, str],
               attention_by_image: Optional[Mapping[bytes, np.ndarray]] = None):
    super().__init__()
    keys = list(captions_by_image)
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string),
                                            tf.constant([captions_by_image[k] for k in keys])),
        default_value='')
    self.attention = None
    if attention_by_image is not None:
      shapes = {np.shape(maps) for maps in attention_by_image.values()}
      if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f'Attention maps of shapes {shapes}; expected one [max_length, grid_h, grid_w].')
      attention_keys = list(attention_by_image)
      self.attention_rows = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(tf.constant(attention_keys, tf.string),
                                              tf.range(len(attention_keys), dtype=tf.int64)),
          default_value=len(attention_keys))
      # One row per image, then the zeros of an unknown image.
      self.attention = tf.constant(np.stack([np.asarray(attention_by_image[k], np.float32)
                                             for k in attention_keys] + [np.zeros(shapes.pop(), np.float32)]))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=names.IMAGES_INPUT)])
  def caption(self, images):
    outputs = {names.CAPTION_OUTPUT: self.table.lookup(images),  # string [batch]
               names.LOG_PROBABILITY_OUTPUT: tf.fill(tf.shape(images), LOG_PROBABILITY)}  # float32 [batch]
    if self.attention is not None:  # float32 [batch, max_length, grid_h, grid_w]
      outputs[names.ATTENTION_OUTPUT] = tf.gather(self.attention, self.attention_rows.lookup(images))
    return outputs

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=names.EXAMPLES_INPUT)])
  def caption_examples(self, examples):
    parsed = tf.io.parse_example(
        examples, {names.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return self.caption(parsed[names.IMAGE_KEY])


def save_lookup_captioner(export_dir: str, captions_by_image: Mapping[bytes, str],
                          attention_by_image: Optional[Mapping[bytes, np.ndarray]] = None) -> str:
  """Saves a LookupCaptioner as a serving SavedModel in `export_dir`; returns `export_dir`."""
  module = LookupCaptioner(captions_by_image, attention_by_image)
  tf.saved_model.save(module, str(export_dir), signatures={
      names.CAPTION_SIGNATURE: module.caption.get_concrete_function(),
      names.EXAMPLES_SIGNATURE: module.caption_examples.get_concrete_function(),
  })
  return str(export_dir)


def export_lookup_captioner(uri: str, captions_by_image: Mapping[bytes, str], model_id: int,
                            stages: Optional[List[str]] = None,
                            attention_by_image: Optional[Mapping[bytes, np.ndarray]] = None
                            ) -> standard_artifacts.Model:
  """Saves a LookupCaptioner as a Trainer's Model artifact at `uri` (SavedModel in <uri>/Format-Serving),
  recording `stages` as its training stages as the Trainer does (none recorded if None)."""
  model = standard_artifacts.Model()
  model.uri = str(uri)
  model.id = model_id
  save_lookup_captioner(captioning.serving_model_dir(model), captions_by_image, attention_by_image)
  if stages is not None:
    stages_lib.write(captioning.serving_model_dir(model), stages,
                     config_lib.SHOW_AND_TELL if attention_by_image is None else config_lib.ATTENTION)
  return model
