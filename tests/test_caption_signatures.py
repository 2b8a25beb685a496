"""components/caption_signatures.py: the caption signatures' inputs, built without TensorFlow, and their outputs decoded."""
import numpy as np
import pytest
import tensorflow as tf

from components import caption_signatures
from components import names
from components import records
from testing.images import block_image


@pytest.mark.parametrize('image', [b'', b'x', bytes(range(256)) * 3, block_image(1, (300, 200), 'JPEG')],
                         ids=['empty', 'one byte', '768 bytes', 'a JPEG'])
def test_image_example_bytes_are_what_tensorflow_serializes(image):
  serialized = caption_signatures.image_example_bytes(image)

  assert serialized == records.image_example(image).SerializeToString()
  assert tf.train.Example.FromString(serialized).features.feature[names.IMAGE_KEY].bytes_list.value == [image]


def test_signature_inputs_per_signature():
  images = [b'a', b'bc']
  assert caption_signatures.signature_inputs(names.CAPTION_SIGNATURE, images) == (names.IMAGES_INPUT, images)
  name, values = caption_signatures.signature_inputs(names.EXAMPLES_SIGNATURE, images)
  assert name == names.EXAMPLES_INPUT and values == [records.image_example(i).SerializeToString() for i in images]
  with pytest.raises(ValueError, match="Unknown caption signature 'from_features'"):
    caption_signatures.signature_inputs(names.FEATURES_SIGNATURE, images)


def _outputs(**extra):
  return {names.CAPTION_OUTPUT: np.array([b'a dog', b'a cat sits']),
          names.LOG_PROBABILITY_OUTPUT: np.array([-1.0, -2.0], np.float32), **extra}


def test_decode_outputs_reads_the_attention_of_an_attention_model():
  attention = np.random.default_rng(0).random((2, 5, 3, 4)).astype(np.float64)

  answer = caption_signatures.decode_outputs(_outputs(**{names.ATTENTION_OUTPUT: attention}), 2, 'the model')
  without = caption_signatures.decode_outputs(_outputs(), 2, 'the model')

  assert answer.attention.dtype == np.float32 and answer.attention.shape == (2, 5, 3, 4)
  np.testing.assert_allclose(answer.attention, attention, rtol=1e-6)
  assert without.attention is None
  captions, log_probabilities = answer  # still unpacks as before
  assert captions == ['a dog', 'a cat sits'] and log_probabilities == [-1.0, -2.0]


@pytest.mark.parametrize('shape', [(2, 5, 3), (3, 5, 3, 4)], ids=['no grid width', 'wrong batch'])
def test_decode_outputs_names_an_attention_of_the_wrong_shape(shape):
  with pytest.raises(ValueError, match=rf"the model returned 'attention' of shape \({shape[0]}, 5, 3"):
    caption_signatures.decode_outputs(_outputs(**{names.ATTENTION_OUTPUT: np.zeros(shape)}), 2, 'the model')
