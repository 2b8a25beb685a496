"""Exports the tiny captioner (serving.tiny_model) with the project's exporter, loads the
SavedModel back and calls both signatures."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from components.training import exporter
from components import features
from components import records
from components.encoder import image_features
from serving import tiny_model
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
  return loaded.signatures[features.CAPTION_SIGNATURE](**{features.IMAGES_INPUT: tf.constant(images)})


def _texts(outputs):
  return [c.decode('utf-8') for c in outputs[features.CAPTION_OUTPUT].numpy()]


def test_caption_signature_outputs(captioner, images):
  outputs = _caption(captioner[2], images)
  captions = outputs[features.CAPTION_OUTPUT]
  log_probs = outputs[features.LOG_PROBABILITY_OUTPUT]
  assert captions.dtype == tf.string and captions.shape == (3,)
  assert log_probs.dtype == tf.float32 and log_probs.shape == (3,)
  assert np.all(log_probs.numpy() < 0)
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
  expected = [' '.join(pieces.vocabulary[i] for i in row[:n] if i >= features.NUM_SPECIAL_TOKENS)
              for row, n in zip(ids.numpy(), lengths.numpy())]
  outputs = _caption(loaded, images)
  assert _texts(outputs) == expected
  np.testing.assert_allclose(outputs[features.LOG_PROBABILITY_OUTPUT].numpy(), log_probs.numpy(), rtol=1e-5)


def test_examples_signature_equals_caption_signature(captioner, images):
  loaded = captioner[2]
  examples = [records.image_example(image, 'x.png', ['a caption']).SerializeToString() for image in images]
  from_examples = loaded.signatures[features.EXAMPLES_SIGNATURE](
      **{features.EXAMPLES_INPUT: tf.constant(examples)})
  from_images = _caption(loaded, images)
  for key in (features.CAPTION_OUTPUT, features.LOG_PROBABILITY_OUTPUT):
    np.testing.assert_array_equal(from_examples[key].numpy(), from_images[key].numpy())


def test_gif_and_bmp_are_captioned(captioner):
  gif, bmp = test_images.block_image(4, image_format='GIF'), test_images.block_image(5, image_format='BMP')
  outputs = _caption(captioner[2], [gif, bmp])
  # The same answers as for the same pixels in PNG (both formats are lossless here).
  as_png = _caption(captioner[2], [test_images.block_image(4), test_images.block_image(5)])
  assert _texts(outputs) == _texts(as_png)
  np.testing.assert_allclose(outputs[features.LOG_PROBABILITY_OUTPUT].numpy(),
                             as_png[features.LOG_PROBABILITY_OUTPUT].numpy(), rtol=1e-5)


def test_empty_batch_gives_empty_outputs(captioner):
  outputs = _caption(captioner[2], tf.zeros([0], tf.string))
  assert outputs[features.CAPTION_OUTPUT].shape == (0,)
  assert outputs[features.LOG_PROBABILITY_OUTPUT].shape == (0,)


def test_garbage_bytes_raise_invalid_argument(captioner, images):
  with pytest.raises(tf.errors.InvalidArgumentError, match='Unknown image file format'):
    _caption(captioner[2], [images[0], b'this is not an image'])


def test_vocabulary_must_match_the_decoder(captioner, tmp_path):
  _, pieces, _ = captioner
  words = pieces.vocabulary[features.NUM_SPECIAL_TOKENS:]
  with pytest.raises(ValueError, match='must start with'):
    exporter.export_serving_model(str(tmp_path / 'a'), pieces.feature_extractor, pieces.decoder,
                                  words + ['x'] * features.NUM_SPECIAL_TOKENS, MAX_LENGTH, BEAM_WIDTH)
  with pytest.raises(ValueError, match='predicts'):
    exporter.export_serving_model(str(tmp_path / 'b'), pieces.feature_extractor, pieces.decoder,
                                  pieces.vocabulary[:-1], MAX_LENGTH, BEAM_WIDTH)


def test_saved_model_cli_lists_both_signatures(captioner):
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  shown = subprocess.run([cli, 'show', '--all', '--dir', captioner[0]], check=True, capture_output=True,
                         text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')).stdout
  signatures = {name: shown.split(f"signature_def['{name}']")[1].split('signature_def[')[0]
                for name in (features.CAPTION_SIGNATURE, features.EXAMPLES_SIGNATURE)}
  for name, input_name in ((features.CAPTION_SIGNATURE, features.IMAGES_INPUT),
                           (features.EXAMPLES_SIGNATURE, features.EXAMPLES_INPUT)):
    text = signatures[name]
    assert f"inputs['{input_name}']" in text
    assert f"outputs['{features.CAPTION_OUTPUT}']" in text
    assert f"outputs['{features.LOG_PROBABILITY_OUTPUT}']" in text
    assert text.count('dtype: DT_STRING') == 2 and text.count('dtype: DT_FLOAT') == 1
    assert text.count('shape: (-1)') == 3
