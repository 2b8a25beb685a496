"""Tests of the Transform preprocessing_fn on small in-memory data, run by tf.Transform on Beam."""
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from components import names
from components.training import transform
from components import config as config_lib

_RAW_FEATURE_SPEC = {
    names.IMAGE_ID_KEY: tf.io.FixedLenFeature([1], tf.string),
    names.IMAGE_KEY: tf.io.FixedLenFeature([1], tf.string),
    names.CAPTIONS_KEY: tf.io.VarLenFeature(tf.string),
}


def _run(instances, **transform_config):
  """Analyzes and transforms `instances`; returns (transformed rows, vocabulary)."""
  metadata = dataset_metadata.DatasetMetadata(
      schema_utils.schema_from_feature_spec(_RAW_FEATURE_SPEC))
  custom_config = config_lib.to_custom_config(config_lib.TransformConfig(**transform_config))
  with tempfile.TemporaryDirectory() as temp_dir:
    with tft_beam.Context(temp_dir=temp_dir, force_tf_compat_v1=False):
      (rows, _), transform_fn = (
          (instances, metadata)
          | tft_beam.AnalyzeAndTransformDataset(
              lambda inputs: transform.preprocessing_fn(inputs, custom_config),
              output_record_batches=False))
      output_dir = temp_dir + '/out'
      _ = transform_fn | tft_beam.WriteTransformFn(output_dir)
    vocabulary = [w.decode() for w in
                  tft.TFTransformOutput(output_dir).vocabulary_by_name(names.VOCABULARY_NAME)]
  return rows, vocabulary


def _instance(image_id, captions):
  return {names.IMAGE_ID_KEY: [image_id.encode()], names.IMAGE_KEY: [b'\x89PNG bytes'],
          names.CAPTIONS_KEY: [c.encode() for c in captions]}


def _as_captions(row):
  length = int(row[names.SEQUENCE_LENGTH_KEY])
  return np.asarray(row[names.CAPTION_IDS_KEY]).reshape(-1, length)


def test_vocabulary_ids_markers_and_padding():
  rows, vocabulary = _run([
      _instance('a.jpg', ['A red circle.', 'a red  square', 'A Blue circle !']),
      _instance('b.jpg', ['a blue square', 'a green dog']),
  ], min_word_frequency=2, sequence_length=6)
  # Most frequent first; 'green' and 'dog' are seen once and fall below the threshold.
  assert vocabulary[:1] == ['a']
  assert set(vocabulary) == {'a', 'red', 'circle', 'square', 'blue'}
  ids = {w: i + names.NUM_SPECIAL_TOKENS for i, w in enumerate(vocabulary)}
  first = _as_captions(rows[0])
  assert first.shape == (3, 6)
  np.testing.assert_array_equal(
      first[0], [names.START_ID, ids['a'], ids['red'], ids['circle'], names.END_ID, names.PAD_ID])
  np.testing.assert_array_equal(
      first[2], [names.START_ID, ids['a'], ids['blue'], ids['circle'], names.END_ID, names.PAD_ID])
  second = _as_captions(rows[1])
  assert second.shape == (2, 6)
  np.testing.assert_array_equal(
      second[1], [names.START_ID, ids['a'], names.UNKNOWN_ID, names.UNKNOWN_ID,
                  names.END_ID, names.PAD_ID])
  assert rows[0][names.IMAGE_KEY] == [b'\x89PNG bytes']
  assert rows[1][names.IMAGE_ID_KEY] == [b'b.jpg']


def test_long_captions_are_truncated_but_keep_end():
  rows, vocabulary = _run([_instance('a.jpg', ['one two three four five six'])],
                          min_word_frequency=1, sequence_length=4)
  ids = {w: i + names.NUM_SPECIAL_TOKENS for i, w in enumerate(vocabulary)}
  np.testing.assert_array_equal(
      _as_captions(rows[0])[0], [names.START_ID, ids['one'], ids['two'], names.END_ID])


def test_sequence_length_comes_from_the_length_percentile():
  # 19 captions of 3 words and one of 9: the 90th percentile is 3 words, + START/END.
  captions = ['w%d x y' % i for i in range(19)] + ['a b c d e f g h i']
  rows, _ = _run([_instance('a.jpg', captions)], min_word_frequency=1, length_percentile=90)
  assert int(rows[0][names.SEQUENCE_LENGTH_KEY]) == 5
  assert _as_captions(rows[0]).shape == (20, 5)
  rows, _ = _run([_instance('a.jpg', captions)], min_word_frequency=1, length_percentile=100)
  assert int(rows[0][names.SEQUENCE_LENGTH_KEY]) == 11


def test_unknown_config_keys_are_refused():
  with pytest.raises(ValueError, match='Unknown TransformConfig keys'):
    config_lib.from_custom_config(config_lib.TransformConfig, {'maxlen': 3})
