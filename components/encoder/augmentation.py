"""The training images' augmentation as Keras preprocessing layers.

Equivalent of
    ImageDataGenerator(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                       shear_range=0.2, zoom_range=0.2, horizontal_flip=True, fill_mode='nearest')
but in-graph, so it runs on batches inside tf.data or the model. Notes on the
ImageDataGenerator semantics kept here:
  * shear_range is an angle in degrees (so 0.2 is a very mild shear);
  * zoom_range=0.2 draws independent zooms in [0.8, 1.2] for height and width.

Horizontal flips swap what is left and right in the picture but not the words
"left"/"right" in its captions, so they are off by default.

The layers are only active when called with training=True (Keras passes it
during `fit`); pass `training=True` explicitly when augmenting inside tf.data.
"""
import math

import tensorflow as tf
import tf_keras as keras

ROTATION_DEGREES = 40
SHIFT_FRACTION = 0.2
SHEAR_DEGREES = 0.2
ZOOM_FRACTION = 0.2
FILL_MODE = 'nearest'


@keras.saving.register_keras_serializable(package='captioner')
class RandomShear(keras.layers.Layer):
  """Shears each image by a random angle in [-max_degrees, max_degrees] about its centre.

  The shear matrix of ImageDataGenerator ([[1, -sin a], [0, cos a]], angle in
  degrees), which tf_keras 2.16 has no layer for.
  """

  def __init__(self, max_degrees, fill_mode=FILL_MODE, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.max_degrees = max_degrees
    self.fill_mode = fill_mode
    self.seed = seed

  def call(self, images, training=True):  # float [batch, h, w, c]
    if not training:
      return images
    batch_size = tf.shape(images)[0]
    height = tf.cast(tf.shape(images)[1], tf.float32)
    max_radians = self.max_degrees * math.pi / 180.0
    angles = tf.random.uniform([batch_size], -max_radians, max_radians, seed=self.seed)
    sin, cos = tf.sin(angles), tf.cos(angles)
    center_y = (height - 1.0) / 2.0
    zeros, ones = tf.zeros_like(angles), tf.ones_like(angles)
    # Maps output (x, y) to input (x - sin*(y - cy), cos*(y - cy) + cy).
    transforms = tf.stack([ones, -sin, sin * center_y,
                           zeros, cos, center_y - cos * center_y,
                           zeros, zeros], axis=1)  # float32 [batch, 8]
    sheared = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32), transforms=transforms,
        output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation='BILINEAR', fill_mode=self.fill_mode.upper())
    return tf.cast(sheared, images.dtype)

  def get_config(self):
    config = super().get_config()
    config.update(max_degrees=self.max_degrees, fill_mode=self.fill_mode, seed=self.seed)
    return config


def build_augmentation(horizontal_flip=False, seed=None):
  """Returns a keras Sequential: float [batch, h, w, 3] (0..255) -> same shape, augmented.

  Args:
    horizontal_flip: also flip left-right (off by default: captions are not flipped).
    seed: optional int for reproducible augmentation.
  """
  layers = [
      keras.layers.RandomRotation(ROTATION_DEGREES / 360.0, fill_mode=FILL_MODE, seed=seed, name='rotation'),
      keras.layers.RandomTranslation(SHIFT_FRACTION, SHIFT_FRACTION, fill_mode=FILL_MODE, seed=seed,
                                     name='shift'),
      RandomShear(SHEAR_DEGREES, fill_mode=FILL_MODE, seed=seed, name='shear'),
      keras.layers.RandomZoom((-ZOOM_FRACTION, ZOOM_FRACTION), (-ZOOM_FRACTION, ZOOM_FRACTION),
                              fill_mode=FILL_MODE, seed=seed, name='zoom'),
  ]
  if horizontal_flip:
    layers.append(keras.layers.RandomFlip('horizontal', seed=seed, name='flip'))
  return keras.Sequential(layers, name='augmentation')
