"""Image decoding and the frozen convolutional backbone (the "encoder").

Decoding and resizing live here, inside TensorFlow, because the serving graph
needs exactly the same steps as training: the exported SavedModel takes encoded
image bytes and nothing may happen in Python around TF Serving.

The backbone is a Keras application with its classifier removed. Its own
`preprocess_input` runs inside the feature-extractor model, so callers always
hand it plain RGB pixels in 0..255 and can never pair a backbone with the wrong
preprocessing.

Poolings (what the feature vector is):
  'fc2'      VGG16's last hidden layer, 4,096-d, at 224 px: the paper's encoder
             (the classifier's softmax layer removed, its fully connected
             layers kept, so the input size is fixed at the one they were
             trained at). A batch of one image is padded to two rows before
             those layers (`PadRows`): oneDNN multiplies a single row with
             another kernel whose sums round differently, so an image alone
             would get other features than in a batch.
  'avg'      the last conv block averaged over space: 512-d for VGG16, and for
             InceptionV3 its 2,048-d pool, the paper's encoder for that backbone.
  'flatten'  the last conv block flattened (7*7*512 = 25,088 values at 224 px):
             keeps where things are, at any input size; the embedded dataset's
             choice, whose captions say "left of" and "above".
  'grid'     the last conv block before its final pooling (VGG16's block5_conv3,
             14x14x512 at 224 px, 4x4x512 at 64 px; InceptionV3's mixed10),
             rounded to config_lib.GRID_FEATURE_DTYPE and flattened: the
             locations the attention decoder attends over, in row-major order
             ([grid_h, grid_w, channels] is `grid_shape`).

Precision (components/encoder/precision.py): 'bfloat16' builds the backbone
under Keras' `mixed_bfloat16` policy, so its convolutions and dense layers
compute in bfloat16 from float32 weights; the preprocessing before them and
the features after them stay float32. The policy is stored in each layer's
config, so the saved backbone, loaded by the Trainer and embedded in the
serving graph, computes in the same precision as the feature pass.
"""
import collections
import contextlib

import tensorflow as tf
import tf_keras as keras

from components import config as config_lib
from components.encoder import precision as precision_lib

Backbone = collections.namedtuple('Backbone', ['constructor', 'preprocess_input'])

# Keyed as config_lib.BACKBONE_IMAGE_SIZES, which holds each one's own input side.
BACKBONES = {
    'vgg16': Backbone(keras.applications.VGG16, keras.applications.vgg16.preprocess_input),
    'inception_v3': Backbone(keras.applications.InceptionV3, keras.applications.inception_v3.preprocess_input),
}
# The fully connected layers of VGG16 take exactly the input side it was trained at.
FC2_IMAGE_SIZE = config_lib.BACKBONE_IMAGE_SIZES['vgg16']
_FC2_LAYER = 'fc2'
# VGG16's layers around its fully connected head (keras.applications names).
_LAST_POOL_LAYER, _FLATTEN_LAYER, _FC1_LAYER = 'block5_pool', 'flatten', 'fc1'
# Each backbone's last conv block before its final pooling: the 'grid' pooling's locations.
GRID_LAYERS = {'vgg16': 'block5_conv3', 'inception_v3': 'mixed10'}
# Rows the fully connected layers always see (see the module docstring, 'fc2').
_MIN_DENSE_ROWS = 2


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


def encode_images(feature_extractor, image_bytes):
  """Encoded images string [batch] -> float32 [batch, feature_dim] through `feature_extractor`.

  The one path from bytes to features: the ImageFeatureGen's cached features,
  its parity check and the exported serving graph all run it, so a model
  trained on the cache sees at serving time what it saw in training.
  """
  pixels = decode_images(image_bytes, feature_extractor.input_shape[1])
  return feature_extractor(pixels, training=False)


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


@keras.saving.register_keras_serializable(package='captioner')
class PadRows(keras.layers.Layer):
  """Pads a batch [rows, dim] with zero rows up to `min_rows` (see the module docstring, 'fc2').

  Each output row of a matrix product depends on its own input row only, and
  from two rows on oneDNN's kernels give every row the same bits whatever the
  batch (tests/test_feature_precision.py); padding costs next to nothing, since
  on a CPU the dense layers are bound by reading their weights.
  """

  def __init__(self, min_rows=_MIN_DENSE_ROWS, **kwargs):
    super().__init__(**kwargs)
    self.min_rows = min_rows

  def call(self, rows):
    return tf.pad(rows, [[0, tf.maximum(self.min_rows - tf.shape(rows)[0], 0)], [0, 0]])

  def get_config(self):
    config = super().get_config()
    config.update(min_rows=self.min_rows)
    return config


@keras.saving.register_keras_serializable(package='captioner')
class TakeRows(keras.layers.Layer):
  """[padded, original] -> the first rows of `padded`, as many as `original` has (undoes PadRows)."""

  def call(self, inputs):
    padded, original = inputs
    return padded[:tf.shape(original)[0]]


@keras.saving.register_keras_serializable(package='captioner')
class RoundTo(keras.layers.Layer):
  """Rounds float32 values to `storage_dtype` and back: what the feature artifact stores is exact."""

  def __init__(self, storage_dtype, **kwargs):
    kwargs['dtype'] = 'float32'
    super().__init__(**kwargs)
    self.storage_dtype = storage_dtype

  def call(self, values):
    return tf.cast(tf.cast(values, self.storage_dtype), tf.float32)

  def get_config(self):
    config = super().get_config()
    config.update(storage_dtype=self.storage_dtype)
    return config


def grid_shape(feature_extractor: keras.Model):
  """[grid_h, grid_w, channels] of a 'grid' feature extractor (its layer before the flattening)."""
  return [int(d) for d in feature_extractor.get_layer(_GRID_ROUND_LAYER).output_shape[1:]]


_GRID_ROUND_LAYER = 'grid_rounded'


@contextlib.contextmanager
def _keras_policy(name):
  """Layers created inside take the Keras dtype policy `name` (restored on exit)."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def _vgg16_fc2(weights, pixels):
  """VGG16 up to fc2 on preprocessed `pixels`, with PadRows around the fully connected layers."""
  classifier = keras.applications.VGG16(include_top=True, weights=weights)
  conv = keras.Model(classifier.input, classifier.get_layer(_LAST_POOL_LAYER).output, name=classifier.name)
  conv.trainable = False
  flat = classifier.get_layer(_FLATTEN_LAYER)(conv(pixels, training=False))
  hidden = classifier.get_layer(_FC1_LAYER)(PadRows(name='pad_rows')(flat))
  return TakeRows(name='take_rows')([classifier.get_layer(_FC2_LAYER)(hidden), flat])


def build_feature_extractor(encoder: config_lib.EncoderConfig) -> keras.Model:
  """Builds the frozen encoder `encoder` describes: pixels -> one feature vector per image.

  Args:
    encoder: backbone, a key of BACKBONES ('vgg16' or 'inception_v3');
      image_size, its square input (`encoder.input_size`: None means the
      backbone's own, 224 for VGG16, 299 for InceptionV3; Keras rejects sizes
      below the backbone's minimum, 32 for VGG16, 75 for InceptionV3; 'fc2'
      takes 224 only); backbone_weights, None (random initialisation),
      'imagenet' (Keras download), or the path of a local .h5 weights file (the
      full VGG16 file, with its fully connected layers, for 'fc2', the
      headless "notop" file otherwise); pooling, one of config_lib.POOLINGS
      (see the module docstring; 'fc2' is VGG16 only); precision, 'float32' or
      'bfloat16' (config_lib.RESOLVED_PRECISIONS: resolve 'auto' first with
      precision_lib.resolve), the arithmetic of the convolutions and dense
      layers. `augment` plays no part here (the Trainer augments pixels).

  Returns:
    A non-trainable keras Model: float32 [batch, size, size, 3] (0..255) ->
    float32 [batch, feature_dim]; feature_dim is `model.output_shape[-1]`
    (4096 for 'fc2'; for 'avg' 512 / 2048; for 'flatten' and 'grid' h' * w' * channels).
  """
  backbone, pooling, weights = encoder.backbone, encoder.pooling, encoder.backbone_weights
  spec = get_backbone(backbone)
  if pooling not in config_lib.POOLINGS:
    raise ValueError(f'Unknown pooling {pooling!r}; choose one of {config_lib.POOLINGS}.')
  if encoder.precision not in precision_lib.KERAS_POLICIES:
    raise ValueError(f'Unknown backbone precision {encoder.precision!r}; choose one of '
                     f'{sorted(precision_lib.KERAS_POLICIES)} (resolve {config_lib.AUTO_PRECISION!r} first).')
  if weights not in (None, 'imagenet') and not tf.io.gfile.exists(weights):
    raise ValueError(f'Backbone weights file {weights!r} does not exist.')
  image_size = encoder.input_size
  if pooling == 'fc2':
    if backbone != 'vgg16':
      raise ValueError(f"pooling 'fc2' is VGG16's last hidden layer; for {backbone!r} use 'avg'.")
    if image_size != FC2_IMAGE_SIZE:
      raise ValueError(f"pooling 'fc2' needs image_size {FC2_IMAGE_SIZE} (VGG16's fully connected "
                       f'layers are sized for it), got {image_size}.')

  images = keras.Input(shape=(image_size, image_size, 3), dtype=tf.float32, name='images')
  with _keras_policy(precision_lib.KERAS_POLICIES[encoder.precision]):
    x = BackbonePreprocessing(backbone, name='preprocess_input')(images)
    if pooling == 'fc2':
      x = _vgg16_fc2(weights, x)  # [batch, 4096]
    else:
      net = spec.constructor(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
      if pooling == config_lib.GRID_POOLING:
        net = keras.Model(net.input, net.get_layer(GRID_LAYERS[backbone]).output, name=net.name)
      net.trainable = False
      x = net(x, training=False)  # [batch, h', w', channels]
    if pooling == config_lib.GRID_POOLING:
      x = keras.layers.Flatten(name='flatten')(RoundTo(config_lib.GRID_FEATURE_DTYPE, name=_GRID_ROUND_LAYER)(x))
    elif pooling == 'flatten':
      x = keras.layers.Flatten(name='flatten')(x)
    elif pooling == 'avg':  # averaged in float32: 2,048 bfloat16 sums would lose digits
      x = keras.layers.GlobalAveragePooling2D(dtype='float32', name='avg_pool')(x)
    features = keras.layers.Activation('linear', dtype='float32', name='features')(x)
  model = keras.Model(images, features, name=f'{backbone}_features')
  model.trainable = False
  return model
