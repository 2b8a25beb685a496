"""components/caption_signatures.py: the caption signatures' inputs, built without TensorFlow."""
import pytest
import tensorflow as tf

from components import caption_signatures
from components import features
from components import records
from testing.images import block_image


@pytest.mark.parametrize('image', [b'', b'x', bytes(range(256)) * 3, block_image(1, (300, 200), 'JPEG')],
                         ids=['empty', 'one byte', '768 bytes', 'a JPEG'])
def test_image_example_bytes_are_what_tensorflow_serializes(image):
  serialized = caption_signatures.image_example_bytes(image)

  assert serialized == records.image_example(image).SerializeToString()
  assert tf.train.Example.FromString(serialized).features.feature[features.IMAGE_KEY].bytes_list.value == [image]


def test_signature_inputs_per_signature():
  images = [b'a', b'bc']
  assert caption_signatures.signature_inputs(features.CAPTION_SIGNATURE, images) == (features.IMAGES_INPUT, images)
  name, values = caption_signatures.signature_inputs(features.EXAMPLES_SIGNATURE, images)
  assert name == features.EXAMPLES_INPUT and values == [records.image_example(i).SerializeToString() for i in images]
  with pytest.raises(ValueError, match="Unknown caption signature 'from_features'"):
    caption_signatures.signature_inputs(features.FEATURES_SIGNATURE, images)
