"""Image decoding, the frozen backbones and the augmentation layers."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components import config as config_lib
from components.encoder import augmentation
from components.encoder import image_features
from testing import images

COLOR = (200, 40, 90)


def _extractor(backbone='vgg16', **encoder):
  """A feature extractor with random weights and float32 arithmetic, the rest as `encoder` says."""
  return image_features.build_feature_extractor(config_lib.EncoderConfig(
      backbone=backbone, **{'backbone_weights': None, 'pooling': 'flatten', 'precision': 'float32', **encoder}))


def _solid(fmt, mode='RGB'):
  return images.solid_image(COLOR, image_format=fmt, mode=mode)


def test_decodes_every_format_to_rgb_in_0_255():
  encoded = [_solid('PNG'), _solid('JPEG'), _solid('GIF'), _solid('BMP'), _solid('PNG', 'RGBA')]
  pixels = image_features.decode_images(tf.constant(encoded), 16)
  assert pixels.dtype == tf.float32 and pixels.shape == (5, 16, 16, 3)
  # GIF quantises to a palette and JPEG is lossy: a few levels of tolerance.
  np.testing.assert_allclose(pixels.numpy().reshape(5, -1, 3).mean(axis=1), [COLOR] * 5, atol=4)


def test_grey_images_get_three_channels():
  pixels = image_features.decode_images(tf.constant([_solid('PNG', 'L')]), 8)
  np.testing.assert_allclose(pixels.numpy()[0], np.full([8, 8, 3], COLOR[0]), atol=1e-3)


def test_garbage_bytes_raise_invalid_argument():
  with pytest.raises(tf.errors.InvalidArgumentError, match='Unknown image file format'):
    image_features.decode_images(tf.constant([_solid('PNG'), b'not an image']), 8)


def test_unknown_names_and_missing_weights_are_rejected(tmp_path):
  with pytest.raises(ValueError, match="'resnet'.*inception_v3.*vgg16"):
    _extractor('resnet')
  with pytest.raises(ValueError, match='pooling'):
    _extractor('vgg16', image_size=32, pooling='max')
  with pytest.raises(ValueError, match='missing.h5'):
    _extractor('vgg16', image_size=32, backbone_weights=str(tmp_path / 'missing.h5'))


@pytest.mark.parametrize('image_size,pooling,feature_dim', [(32, 'flatten', 512), (64, 'flatten', 2 * 2 * 512),
                                                            (64, 'avg', 512)])
def test_vgg16_features_are_frozen_and_sized(image_size, pooling, feature_dim):
  extractor = _extractor('vgg16', image_size=image_size, pooling=pooling)
  assert extractor.output_shape == (None, feature_dim)
  assert not extractor.trainable_weights and extractor.non_trainable_weights
  features = extractor(tf.random.uniform([2, image_size, image_size, 3], 0, 255))
  assert features.dtype == tf.float32 and features.shape == (2, feature_dim)


def test_backbone_preprocessing_runs_inside_the_extractor():
  extractor = _extractor('vgg16', image_size=32, pooling='avg')
  pixels = tf.random.uniform([2, 32, 32, 3], 0, 255)
  backbone = extractor.get_layer('vgg16')
  expected = tf.reduce_mean(backbone(keras.applications.vgg16.preprocess_input(pixels)), axis=[1, 2])
  np.testing.assert_allclose(extractor(pixels), expected, rtol=1e-4, atol=1e-5)


def test_weights_load_from_a_local_h5_file(tmp_path):
  keras.utils.set_random_seed(1)
  original = _extractor('vgg16', image_size=32)
  path = str(tmp_path / 'vgg16_notop.h5')
  original.get_layer('vgg16').save_weights(path)
  keras.utils.set_random_seed(2)
  reloaded = _extractor('vgg16', image_size=32, backbone_weights=path)
  fresh = _extractor('vgg16', image_size=32)
  pixels = tf.random.uniform([2, 32, 32, 3], 0, 255)
  np.testing.assert_allclose(reloaded(pixels), original(pixels), rtol=1e-5, atol=1e-6)
  assert not np.allclose(fresh(pixels), original(pixels))


def test_inception_v3_at_its_minimum_size():
  extractor = _extractor('inception_v3', image_size=75, pooling='avg')
  assert extractor.output_shape == (None, 2048)
  assert config_lib.EncoderConfig(backbone='inception_v3').input_size == 299


def test_vgg16_fc2_is_the_classifiers_last_hidden_layer_at_224_px():
  keras.utils.set_random_seed(3)
  extractor = _extractor('vgg16', pooling='fc2')
  assert extractor.input_shape == (None, 224, 224, 3) and extractor.output_shape == (None, 4096)
  assert not extractor.trainable_weights
  conv = extractor.get_layer('vgg16')
  assert conv.layers[-1].name == 'block5_pool'  # then flatten, fc1, fc2; the softmax layer is gone
  assert 'predictions' not in [layer.name for layer in extractor.layers]
  pixels = tf.random.uniform([2, 224, 224, 3], 0, 255, seed=4)
  # fc2 by hand from the same layers: flatten the last pool, two ReLU dense layers.
  pooled = conv(keras.applications.vgg16.preprocess_input(pixels))
  hidden = extractor.get_layer('fc1')(keras.layers.Flatten()(pooled))
  np.testing.assert_allclose(extractor(pixels), extractor.get_layer('fc2')(hidden), rtol=1e-4, atol=1e-4)


def test_fc2_refuses_other_sizes_and_backbones():
  with pytest.raises(ValueError, match='image_size 224'):
    _extractor('vgg16', image_size=64, pooling='fc2')
  with pytest.raises(ValueError, match="inception_v3.*'avg'"):
    _extractor('inception_v3', pooling='fc2')


# --- Augmentation ---

def test_augmentation_is_off_outside_training():
  images = tf.random.uniform([2, 24, 24, 3], 0, 255)
  layers = augmentation.build_augmentation(horizontal_flip=True)
  np.testing.assert_array_equal(layers(images, training=False), images)


def test_augmentation_changes_images_within_their_value_range():
  images = tf.random.uniform([4, 24, 24, 3], 0, 255, seed=0)
  augmented = augmentation.build_augmentation(seed=0)(images, training=True)
  assert augmented.shape == images.shape
  assert not np.allclose(augmented, images)
  # 'nearest' fill and bilinear interpolation never leave the input's range.
  assert augmented.numpy().min() >= 0 and augmented.numpy().max() <= 255


def test_horizontal_flip_is_opt_in():
  assert 'flip' not in [layer.name for layer in augmentation.build_augmentation().layers]
  assert 'flip' in [layer.name for layer in augmentation.build_augmentation(horizontal_flip=True).layers]


def test_shear_slants_a_vertical_line_about_the_centre():
  size = 21  # the centre row (10) stays in place
  images = np.zeros([8, size, size, 1], np.float32)
  images[:, :, size // 2] = 255.0
  sheared = augmentation.RandomShear(30.0, seed=1)(tf.constant(images), training=True).numpy()
  column = lambda row: sheared[:, row, :, 0].argmax(axis=1) - size // 2  # offset of the line per image
  np.testing.assert_array_equal(column(size // 2), 0)
  np.testing.assert_allclose(column(0), -column(size - 1), atol=1)
  assert np.any(np.abs(column(0)) >= 2)
  np.testing.assert_array_equal(augmentation.RandomShear(30.0)(tf.constant(images), training=False), images)
