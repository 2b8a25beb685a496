"""Exports the tiny captioner (testing.tiny_model) with the project's exporter, loads the
SavedModel back and calls its signatures."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tensorflow_serving.apis import prediction_log_pb2

from components.training import exporter
from components import names
from components import records
from components.encoder import image_features
from testing import tiny_model
from testing import images as test_images

IMAGE_SIZE = tiny_model.IMAGE_SIZE
MAX_LENGTH = 6
BEAM_WIDTH = 3


@pytest.fixture(scope='module')
def captioner(tmp_path_factory):
  """(export dir, the tiny captioner's pieces, the loaded SavedModel)."""
  pieces = tiny_model.build_tiny_captioner(max_length=MAX_LENGTH)
  export_dir = str(tmp_path_factory.mktemp('export') / 'serving_model')
  exporter.export_serving_model(export_dir, pieces.feature_extractor, pieces.decoder, pieces.vocabulary,
                                max_length=MAX_LENGTH, beam_width=BEAM_WIDTH)
  return export_dir, pieces, tf.saved_model.load(export_dir)


@pytest.fixture(scope='module')
def images():
  return [test_images.block_image(0, (40, 56)), test_images.block_image(1, (40, 56), 'JPEG'),
          test_images.block_image(2, (64, 32))]


def _caption(loaded, images):
  return loaded.signatures[names.CAPTION_SIGNATURE](**{names.IMAGES_INPUT: tf.constant(images)})


def _texts(outputs):
  return [c.decode('utf-8') for c in outputs[names.CAPTION_OUTPUT].numpy()]


def test_caption_signature_outputs(captioner, images):
  outputs = _caption(captioner[2], images)
  captions = outputs[names.CAPTION_OUTPUT]
  log_probs = outputs[names.LOG_PROBABILITY_OUTPUT]
  assert captions.dtype == tf.string and captions.shape == (3,)
  assert log_probs.dtype == tf.float32 and log_probs.shape == (3,)
  assert np.all(log_probs.numpy() < 0)
  assert names.ATTENTION_OUTPUT not in outputs  # Show and Tell has no attention to show
  for caption in _texts(outputs):
    # Words of the vocabulary joined by single spaces: no special token, no empty word.
    words = caption.split(' ')
    assert 1 <= len(words) <= MAX_LENGTH and '' not in words, caption
    assert set(words) <= set(tiny_model.WORDS), caption
  # The image reaches the decoder: the three images get three different answers.
  assert len(set(zip(_texts(outputs), log_probs.numpy().tolist()))) == 3


def test_caption_signature_equals_direct_decoding(captioner, images):
  _, pieces, loaded = captioner
  pixels = image_features.decode_images(tf.constant(images), IMAGE_SIZE)
  ids, lengths, log_probs = pieces.decoder.generate(pieces.feature_extractor(pixels), BEAM_WIDTH, MAX_LENGTH)
  expected = [' '.join(pieces.vocabulary[i] for i in row[:n] if i >= names.NUM_SPECIAL_TOKENS)
              for row, n in zip(ids.numpy(), lengths.numpy())]
  outputs = _caption(loaded, images)
  assert _texts(outputs) == expected
  np.testing.assert_allclose(outputs[names.LOG_PROBABILITY_OUTPUT].numpy(), log_probs.numpy(), rtol=1e-5)


def test_examples_signature_equals_caption_signature(captioner, images):
  loaded = captioner[2]
  examples = [records.image_example(image, 'x.png', ['a caption']).SerializeToString() for image in images]
  from_examples = loaded.signatures[names.EXAMPLES_SIGNATURE](
      **{names.EXAMPLES_INPUT: tf.constant(examples)})
  from_images = _caption(loaded, images)
  for key in (names.CAPTION_OUTPUT, names.LOG_PROBABILITY_OUTPUT):
    np.testing.assert_array_equal(from_examples[key].numpy(), from_images[key].numpy())


def test_features_signature_equals_caption_signature(captioner, images):
  _, pieces, loaded = captioner
  feature_extractor = pieces.feature_extractor
  vectors = feature_extractor(image_features.decode_images(tf.constant(images), IMAGE_SIZE))
  np.testing.assert_array_equal(loaded.encode_images(tf.constant(images)).numpy(), vectors.numpy())
  from_features = loaded.signatures[names.FEATURES_SIGNATURE](**{names.IMAGE_FEATURES_KEY: vectors})
  from_images = _caption(loaded, images)
  for key in (names.CAPTION_OUTPUT, names.LOG_PROBABILITY_OUTPUT):
    np.testing.assert_array_equal(from_features[key].numpy(), from_images[key].numpy())
  empty = loaded.signatures[names.FEATURES_SIGNATURE](
      **{names.IMAGE_FEATURES_KEY: tf.zeros([0, feature_extractor.output_shape[-1]])})
  assert empty[names.CAPTION_OUTPUT].shape == (0,)


def test_gif_and_bmp_are_captioned(captioner):
  gif, bmp = test_images.block_image(4, image_format='GIF'), test_images.block_image(5, image_format='BMP')
  outputs = _caption(captioner[2], [gif, bmp])
  # The same answers as for the same pixels in PNG (both formats are lossless here).
  as_png = _caption(captioner[2], [test_images.block_image(4), test_images.block_image(5)])
  assert _texts(outputs) == _texts(as_png)
  np.testing.assert_allclose(outputs[names.LOG_PROBABILITY_OUTPUT].numpy(),
                             as_png[names.LOG_PROBABILITY_OUTPUT].numpy(), rtol=1e-5)


def test_empty_batch_gives_empty_outputs(captioner):
  outputs = _caption(captioner[2], tf.zeros([0], tf.string))
  assert outputs[names.CAPTION_OUTPUT].shape == (0,)
  assert outputs[names.LOG_PROBABILITY_OUTPUT].shape == (0,)


def test_garbage_bytes_raise_invalid_argument(captioner, images):
  with pytest.raises(tf.errors.InvalidArgumentError, match='Unknown image file format'):
    _caption(captioner[2], [images[0], b'this is not an image'])


def test_vocabulary_must_match_the_decoder(captioner, tmp_path):
  _, pieces, _ = captioner
  words = pieces.vocabulary[names.NUM_SPECIAL_TOKENS:]
  with pytest.raises(ValueError, match='must start with'):
    exporter.export_serving_model(str(tmp_path / 'a'), pieces.feature_extractor, pieces.decoder,
                                  words + ['x'] * names.NUM_SPECIAL_TOKENS, MAX_LENGTH, BEAM_WIDTH)
  with pytest.raises(ValueError, match='predicts'):
    exporter.export_serving_model(str(tmp_path / 'b'), pieces.feature_extractor, pieces.decoder,
                                  pieces.vocabulary[:-1], MAX_LENGTH, BEAM_WIDTH)


def test_saved_model_cli_lists_both_signatures(captioner):
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  shown = subprocess.run([cli, 'show', '--all', '--dir', captioner[0]], check=True, capture_output=True,
                         text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')).stdout
  signatures = {name: shown.split(f"signature_def['{name}']")[1].split('signature_def[')[0]
                for name in (names.CAPTION_SIGNATURE, names.EXAMPLES_SIGNATURE)}
  for name, input_name in ((names.CAPTION_SIGNATURE, names.IMAGES_INPUT),
                           (names.EXAMPLES_SIGNATURE, names.EXAMPLES_INPUT)):
    text = signatures[name]
    assert f"inputs['{input_name}']" in text
    assert f"outputs['{names.CAPTION_OUTPUT}']" in text
    assert f"outputs['{names.LOG_PROBABILITY_OUTPUT}']" in text
    assert f"outputs['{names.CAPTIONS_OUTPUT}']" in text
    assert f"outputs['{names.LOG_PROBABILITIES_OUTPUT}']" in text
    assert text.count('dtype: DT_STRING') == 3 and text.count('dtype: DT_FLOAT') == 2
    assert text.count('shape: (-1)') == 3 and text.count(f'shape: (-1, {BEAM_WIDTH})') == 2


def test_top_k_outputs_are_the_beam_searchs_k_best(captioner, images):
  _, pieces, loaded = captioner
  pixels = image_features.decode_images(tf.constant(images), IMAGE_SIZE)
  ids, lengths, log_probs = pieces.decoder.generate(pieces.feature_extractor(pixels), BEAM_WIDTH, MAX_LENGTH,
                                                    top_k=BEAM_WIDTH)
  expected = [[' '.join(pieces.vocabulary[i] for i in row[:n] if i >= names.NUM_SPECIAL_TOKENS)
               for row, n in zip(rows, counts)] for rows, counts in zip(ids.numpy(), lengths.numpy())]

  outputs = _caption(loaded, images)
  captions = outputs[names.CAPTIONS_OUTPUT].numpy()
  top_log_probs = outputs[names.LOG_PROBABILITIES_OUTPUT].numpy()

  assert captions.shape == (len(images), BEAM_WIDTH) and top_log_probs.dtype == np.float32
  assert [[c.decode('utf-8') for c in row] for row in captions] == expected
  np.testing.assert_allclose(top_log_probs, log_probs.numpy(), rtol=1e-5)
  assert np.all(top_log_probs[:, :-1] >= top_log_probs[:, 1:])  # best first, -inf (none finished) last
  np.testing.assert_array_equal(captions[:, 0], outputs[names.CAPTION_OUTPUT].numpy())
  np.testing.assert_array_equal(top_log_probs[:, 0], outputs[names.LOG_PROBABILITY_OUTPUT].numpy())


def test_empty_batch_gives_empty_top_k_outputs(captioner):
  outputs = _caption(captioner[2], tf.zeros([0], tf.string))
  assert outputs[names.CAPTIONS_OUTPUT].shape == (0, BEAM_WIDTH)
  assert outputs[names.LOG_PROBABILITIES_OUTPUT].shape == (0, BEAM_WIDTH)


def test_warmup_file_holds_real_requests_for_both_signatures(captioner):
  export_dir, _, loaded = captioner
  logs = list(tf.data.TFRecordDataset(os.path.join(export_dir, names.WARMUP_REQUESTS_PATH)).as_numpy_iterator())
  requests = [prediction_log_pb2.PredictionLog.FromString(log).predict_log.request for log in logs]

  assert {r.model_spec.signature_name for r in requests} == {names.CAPTION_SIGNATURE, names.EXAMPLES_SIGNATURE}
  for request in requests:
    [(alias, proto)] = request.inputs.items()
    values = tf.make_ndarray(proto)
    outputs = loaded.signatures[request.model_spec.signature_name](**{alias: tf.constant(values)})
    assert outputs[names.CAPTION_OUTPUT].shape == (len(values),)
    assert np.all(np.isfinite(outputs[names.LOG_PROBABILITY_OUTPUT].numpy()))
