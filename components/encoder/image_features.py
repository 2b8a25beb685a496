"""Image decoding and the frozen convolutional backbone (the "encoder").

Decoding and resizing live here, inside TensorFlow, because the serving graph
needs exactly the same steps as training: the exported SavedModel takes encoded
image bytes and nothing may happen in Python around TF Serving.

The backbone is a Keras application with its classifier head removed. Its own
`preprocess_input` runs inside the feature-extractor model, so callers always
hand it plain RGB pixels in 0..255 and can never pair a backbone with the wrong
preprocessing.
"""
import collections

import tensorflow as tf
import tf_keras as keras

Backbone = collections.namedtuple('Backbone', ['constructor', 'preprocess_input', 'default_image_size'])

BACKBONES = {
    'vgg16': Backbone(keras.applications.VGG16, keras.applications.vgg16.preprocess_input, 224),
    'inception_v3': Backbone(keras.applications.InceptionV3, keras.applications.inception_v3.preprocess_input, 299),
}
DEFAULT_BACKBONE = 'vgg16'
POOLINGS = ('flatten', 'avg')


def get_backbone(name):
  """Returns the `Backbone` registered as `name`, or a ValueError naming the choices."""
  if name not in BACKBONES:
    raise ValueError(f'Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}.')
  return BACKBONES[name]


def decode_images(image_bytes, image_size):
  """Decodes a batch of encoded images into equally sized RGB pixel arrays.

  Args:
    image_bytes: string [batch], each a whole JPEG/PNG/GIF/BMP file (the first
      frame of an animated GIF is used; grey and RGBA become RGB).
    image_size: int, the side of the square output (images are stretched, not
      cropped, so the whole scene stays visible to the captioner).

  Returns:
    float32 [batch, image_size, image_size, 3], pixel values in 0..255.

  Raises:
    tf.errors.InvalidArgumentError (when run) if an element is not a decodable
    image, e.g. "Unknown image file format. One of JPEG, PNG, GIF, BMP required."
  """
  def decode_one(encoded):  # string [] -> float32 [size, size, 3]
    pixels = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.image.resize(pixels, [image_size, image_size])

  return tf.map_fn(decode_one, image_bytes,
                   fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32))


@keras.saving.register_keras_serializable(package='captioner')
class BackbonePreprocessing(keras.layers.Layer):
  """Applies the named backbone's own `preprocess_input` to 0..255 RGB pixels.

  Runs in float32 whatever the global mixed-precision policy, because the
  ImageNet mean subtraction / scaling loses precision in float16.
  """

  def __init__(self, backbone, **kwargs):
    kwargs['dtype'] = 'float32'
    super().__init__(**kwargs)
    self.backbone = backbone
    self._preprocess_input = get_backbone(backbone).preprocess_input

  def call(self, images):  # float32 [batch, h, w, 3] in 0..255
    return self._preprocess_input(images)

  def get_config(self):
    config = super().get_config()
    config.update(backbone=self.backbone)
    return config


def build_feature_extractor(backbone=DEFAULT_BACKBONE, image_size=None, weights=None, pooling='flatten'):
  """Builds the frozen encoder: pixels -> one feature vector per image.

  Args:
    backbone: a key of BACKBONES ('vgg16' or 'inception_v3').
    image_size: side of the square input; None means the backbone's default
      (224 for VGG16, 299 for InceptionV3). Keras rejects sizes below the
      backbone's minimum (32 for VGG16, 75 for InceptionV3).
    weights: None (random initialisation), 'imagenet' (Keras download), or the
      path of a local .h5 weights file for the headless backbone.
    pooling: 'flatten' keeps the spatial layout of the last conv block (what
      words such as "left" or "background" need); 'avg' averages it away
      (much smaller features, e.g. 512 for VGG16 instead of 7*7*512).

  Returns:
    A non-trainable keras Model: float32 [batch, size, size, 3] (0..255) ->
    float32 [batch, feature_dim]; feature_dim is `model.output_shape[-1]`.
  """
  spec = get_backbone(backbone)
  if pooling not in POOLINGS:
    raise ValueError(f'Unknown pooling {pooling!r}; choose one of {POOLINGS}.')
  if weights not in (None, 'imagenet') and not tf.io.gfile.exists(weights):
    raise ValueError(f'Backbone weights file {weights!r} does not exist.')
  image_size = image_size or spec.default_image_size

  images = keras.Input(shape=(image_size, image_size, 3), dtype=tf.float32, name='images')
  net = spec.constructor(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
  net.trainable = False
  x = BackbonePreprocessing(backbone, name='preprocess_input')(images)
  x = net(x, training=False)  # [batch, h', w', channels]
  if pooling == 'flatten':
    x = keras.layers.Flatten(name='flatten')(x)
  else:
    x = keras.layers.GlobalAveragePooling2D(name='avg_pool')(x)
  features = keras.layers.Activation('linear', dtype='float32', name='features')(x)
  model = keras.Model(images, features, name=f'{backbone}_features')
  model.trainable = False
  return model
