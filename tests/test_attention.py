"""The attention decoder on real artifacts of a tiny generated dataset.

testing/transformed_data.py runs the ExampleGen, Transform and ImageFeatureGen
executors once per module (40 images at 32 px) with pooling 'grid' (random
VGG16's block5_conv3: a 2x2x512 grid at 32 px); the attention model trains on
those features, its SavedModel is loaded and its three signatures called.
"""
import argparse
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from components import caption_signatures
from components import config as config_lib
from components import names
from components import records
from components.encoder import features_artifact
from components.evaluation import captioning
from components.training import datasets
from components.training import model as model_lib
from components.training import stages
from components.training import trainer
from pipeline import settings
from testing import executors
from testing import transformed_data

NUM_IMAGES = 40
IMAGE_SIZE = 32
GRID = [2, 2, 512]  # VGG16's block5_conv3 at 32 px
_TINY_ENCODER = config_lib.EncoderConfig(backbone_weights=None, image_size=IMAGE_SIZE, pooling='grid')
_TINY = config_lib.TrainerConfig(
    image_size=IMAGE_SIZE,
    decoder='attention', fused_training=False, decoder_precision='float32', embedding_dim=16,
    lstm_units=16, attention_units=8, batch_size=16, epochs=2)


@pytest.fixture(scope='module')
def transformed(tmp_path_factory):
  return transformed_data.build_transformed_data(str(tmp_path_factory.mktemp('transform')), NUM_IMAGES,
                                                 IMAGE_SIZE)


@pytest.fixture(scope='module')
def grid_features(transformed, tmp_path_factory):
  return transformed_data.build_image_features(transformed.examples_uri,
                                               str(tmp_path_factory.mktemp('features')), _TINY_ENCODER)


@pytest.fixture(scope='module')
def attention_model(transformed, grid_features, tmp_path_factory):
  """run_fn's FnArgs after training and exporting the tiny attention captioner."""
  args = transformed_data.fn_args(transformed, str(tmp_path_factory.mktemp('trainer')), _TINY,
                                  grid_features.uri)
  trainer.run_fn(args)
  return args


def test_the_artifact_stores_the_grid_in_bfloat16_with_its_shape(grid_features):
  info = features_artifact.artifact_encoder_info(grid_features.uri)
  assert (info.pooling, info.feature_dtype, info.grid_shape, info.feature_dim) == (
      'grid', 'bfloat16', GRID, int(np.prod(GRID)))
  assert json.loads(grid_features.get_string_custom_property('grid_shape')) == GRID
  [path, *_] = features_artifact.feature_files(grid_features.uri, names.TRAIN_SPLIT)
  record = next(iter(tf.data.TFRecordDataset(path, compression_type='GZIP'))).numpy()
  stored = tf.train.Example.FromString(record).features.feature[names.IMAGE_FEATURES_KEY]
  assert len(stored.bytes_list.value[0]) == 2 * info.feature_dim  # two bytes a value
  vectors = features_artifact.read_features(grid_features.uri, names.TRAIN_SPLIT)
  vector = next(iter(vectors.values()))
  assert vector.dtype == np.float32 and vector.shape == (info.feature_dim,)
  np.testing.assert_array_equal(vector.astype(tf.bfloat16.as_numpy_dtype).astype(np.float32), vector)
  # The ImageFeatureGen re-encoded images as the serving graph does and found them equal, bit for bit.
  assert grid_features.get_int_custom_property(features_artifact.PARITY_PASSES_PROPERTY) > 0


def test_a_vector_not_exact_in_bfloat16_is_refused():
  with pytest.raises(ValueError, match="image 'x.jpg'.*bfloat16"):
    features_artifact.feature_example('x.jpg', np.array([1.0 + 2 ** -12], np.float32), 'bfloat16')


def test_its_loss_falls_on_a_tiny_batch(transformed, grid_features):
  """A few Adam steps on one batch of real features and captions lower the summed cross-entropy."""
  tf_transform_output = tft.TFTransformOutput(transformed.transform_graph_uri)
  per_image = datasets.images_and_captions(transformed.transformed_files(names.TRAIN_SPLIT),
                                           tf_transform_output)
  vectors = features_artifact.read_features(grid_features.uri, names.TRAIN_SPLIT)
  batch = next(iter(datasets.training_batches(
      datasets.with_cached_features(per_image, vectors, 'train'), 16, shuffle=False, use_image=True,
      captions=datasets.caption_count(per_image))))
  keras.utils.set_random_seed(0)
  caption_model, training_model = model_lib.build_models(
      dataclasses.replace(_TINY, learning_rate=1e-2, dropout=0.0), len(datasets.vocabulary(tf_transform_output)),
      datasets.sequence_length(per_image), feature_extractor=None, grid_shape=GRID)
  assert caption_model.name == 'show_attend_and_tell'
  losses = [float(training_model.train_on_batch(*batch)) for _ in range(15)]
  assert losses[-1] < 0.85 * losses[0] and all(b < a for a, b in zip(losses, losses[1:])), losses


def _signature_outputs(model_dir, examples_bytes, images, vectors):
  loaded = tf.saved_model.load(model_dir)
  return {
      names.CAPTION_SIGNATURE: loaded.signatures[names.CAPTION_SIGNATURE](
          **{names.IMAGES_INPUT: tf.constant(images)}),
      names.EXAMPLES_SIGNATURE: loaded.signatures[names.EXAMPLES_SIGNATURE](
          **{names.EXAMPLES_INPUT: tf.constant(examples_bytes)}),
      names.FEATURES_SIGNATURE: loaded.signatures[names.FEATURES_SIGNATURE](
          **{names.IMAGE_FEATURES_KEY: tf.constant(vectors)}),
  }


def test_every_signature_returns_the_captions_attention(attention_model, transformed, grid_features):
  examples_bytes = transformed.raw_examples(names.DEMO_SPLIT)
  demo = [records.parse_image_example(e, where='demo') for e in examples_bytes]
  cached = features_artifact.read_features(grid_features.uri, names.DEMO_SPLIT)
  vectors = np.stack([cached[example.image_id] for example in demo])
  answers = _signature_outputs(attention_model.serving_model_dir, examples_bytes,
                               [example.image for example in demo], vectors)
  max_length = json.load(open(os.path.join(attention_model.model_run_dir, names.TRAINING_REPORT_FILE))
                         )['sequence_length'] - 1
  reference = answers[names.CAPTION_SIGNATURE]
  for signature, outputs in answers.items():
    attention = outputs[names.ATTENTION_OUTPUT].numpy()
    assert attention.dtype == np.float32 and attention.shape == (len(demo), max_length, 2, 2), signature
    decoded = caption_signatures.decode_outputs({k: v.numpy() for k, v in outputs.items()}, len(demo), signature)
    for caption, weights in zip(decoded.captions, decoded.attention):
      words = len(caption.split()) if caption else 0
      sums = weights.reshape(max_length, -1).sum(axis=1)
      np.testing.assert_allclose(sums[:words], 1.0, rtol=1e-5, err_msg=signature)
      assert np.all(weights[words:] == 0), signature
      assert np.all(weights >= 0)
    # From bytes, tf.Examples and the cached features alike: the same captions and maps.
    assert outputs[names.CAPTION_OUTPUT].numpy().tolist() == reference[names.CAPTION_OUTPUT].numpy().tolist()
    np.testing.assert_array_equal(attention, reference[names.ATTENTION_OUTPUT].numpy())
  signature = tf.saved_model.load(attention_model.serving_model_dir).signatures[names.CAPTION_SIGNATURE]
  assert signature.structured_outputs[names.ATTENTION_OUTPUT].shape.as_list() == [None, max_length, 2, 2]


def test_the_model_records_its_decoder(attention_model):
  assert stages.read_decoder(attention_model.serving_model_dir) == 'attention'
  assert stages.read(attention_model.serving_model_dir) == [stages.CROSS_ENTROPY]
  with open(os.path.join(attention_model.model_run_dir, names.TRAINING_REPORT_FILE)) as f:
    assert json.load(f)['decoder'] == 'attention'


def test_the_evaluators_captioner_reads_the_attention(attention_model, transformed):
  demo = transformed.images(names.DEMO_SPLIT)
  answer = captioning.SavedModelCaptioner(attention_model.serving_model_dir)(demo)
  assert answer.attention is not None and answer.attention.shape[0] == len(demo)


def test_the_attention_decoder_needs_the_grid_and_the_plain_path():
  with pytest.raises(ValueError, match="pooling 'grid', got 'flatten'"):
    config_lib.check_decoder(dataclasses.replace(_TINY_ENCODER, pooling='flatten'), _TINY)
  with pytest.raises(ValueError, match='fused training path'):
    dataclasses.replace(_TINY, fused_training=True)
  with pytest.raises(ValueError, match="Unknown decoder 'transformer'"):
    dataclasses.replace(_TINY, decoder='transformer')


def test_the_decoder_flag_picks_the_decoders_defaults():
  parser = argparse.ArgumentParser()
  settings.add_arguments(parser)
  for dataset in (config_lib.EMBEDDED_DATASET, None):
    args = parser.parse_args(['--decoder', 'attention'])
    encoder_defaults, trainer_defaults = config_lib.decoder_defaults(args.decoder, dataset)
    encoder = settings.encoder_config(args, encoder_defaults)
    config = settings.trainer_config(args, trainer_defaults)
    assert (config.decoder, encoder.pooling, config.fused_training) == ('attention', 'grid', False)
    assert settings.baseline_config(config, encoder).decoder == 'show_and_tell'
  assert config_lib.decoder_defaults('attention')[0].input_size == 224
  default = parser.parse_args([])
  assert settings.trainer_config(default, config_lib.decoder_defaults(default.decoder, config_lib.EMBEDDED_DATASET)[1]) == \
      config_lib.EMBEDDED_TRAINER
  args = parser.parse_args(['--decoder', 'attention', '--pooling', 'flatten'])
  encoder_defaults, trainer_defaults = config_lib.decoder_defaults(args.decoder, config_lib.EMBEDDED_DATASET)
  with pytest.raises(ValueError, match="pooling 'grid'"):
    executors.node_parameters(names.FEATURE_GEN, encoder_config=settings.encoder_config(args, encoder_defaults),
                              trainer_config=settings.trainer_config(args, trainer_defaults))


def test_streamed_grids_equal_the_cached_ones(transformed, grid_features):
  """The Trainer streams bfloat16 grids from the artifact's files: the same vectors and captions
  per image as the in-memory join, batches in float32."""
  tf_transform_output = tft.TFTransformOutput(transformed.transform_graph_uri)
  per_image = datasets.images_and_captions(transformed.transformed_files(names.EVAL_SPLIT),
                                           tf_transform_output)
  cached = datasets.with_cached_features(
      per_image, features_artifact.read_features(grid_features.uri, names.EVAL_SPLIT), 'eval')
  streamed = datasets.with_streamed_features(per_image, grid_features.uri, names.EVAL_SPLIT)
  assert streamed.element_spec[0].dtype == tf.bfloat16
  key = lambda pair: pair[0].tobytes()
  as_float = [(vector.astype(np.float32), ids) for vector, ids in streamed.as_numpy_iterator()]
  expected = sorted(cached.as_numpy_iterator(), key=key)
  for (vector, ids), (want_vector, want_ids) in zip(sorted(as_float, key=key), expected, strict=True):
    np.testing.assert_array_equal(vector, want_vector)
    np.testing.assert_array_equal(ids, want_ids)
  inputs, _ = next(iter(datasets.training_batches(streamed, 4, shuffle=False, use_image=True,
                                                  captions=datasets.caption_count(per_image))))
  assert inputs[names.IMAGE_FEATURES_KEY].dtype == tf.float32


def test_the_stream_accounts_for_every_image(transformed, grid_features):
  tf_transform_output = tft.TFTransformOutput(transformed.transform_graph_uri)
  per_image = datasets.images_and_captions(transformed.transformed_files(names.EVAL_SPLIT),
                                           tf_transform_output)
  with pytest.raises(ValueError, match=r"1 images have no features in split 'eval'"):
    datasets.with_streamed_features(per_image.concatenate(per_image.take(1).map(
        lambda image_id, image, ids: (image_id + b'-copy', image, ids))), grid_features.uri, names.EVAL_SPLIT)
