"""Tests of the Trainer's run_fn on real Transform output of a tiny generated dataset.

testing/transformed_data.py runs the ExampleGen and the stock TFX Transform executor once
per module (40 images at 32 px: 30 train, 5 eval, 5 demo); each run_fn below
trains a tiny model (random VGG16 at 32 px, 16-unit LSTM) and its exported
SavedModel is loaded and called on the demo split's JPEG bytes.
"""
import glob
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from testing import transformed_data
from components import names
from components import features
from components.evaluation import captioning
from components.training import trainer
from components import config as config_lib

NUM_IMAGES = 40
IMAGE_SIZE = 32
_TINY = dict(backbone_weights=None, image_size=IMAGE_SIZE, embedding_dim=16, lstm_units=16,
             batch_size=16, epochs=1)


@pytest.fixture(scope='module')
def transformed(tmp_path_factory):
  return transformed_data.build_transformed_data(str(tmp_path_factory.mktemp('transform')), NUM_IMAGES, IMAGE_SIZE)


def _train(transformed, tmp_path_factory, **overrides):
  """Runs run_fn with the tiny settings plus `overrides`; returns its FnArgs."""
  config = config_lib.TrainerConfig(**{**_TINY, **overrides})
  args = transformed_data.fn_args(transformed, str(tmp_path_factory.mktemp('trainer')), config)
  trainer.run_fn(args)
  return args


@pytest.fixture(scope='module')
def captioner(transformed, tmp_path_factory):
  """The default path: bottleneck features cached once, two epochs."""
  return _train(transformed, tmp_path_factory, epochs=2)


@pytest.fixture(scope='module')
def demo_images(transformed):
  images = transformed.images(features.DEMO_SPLIT)
  assert len(images) == NUM_IMAGES // 8, 'the 6:1:1 split of the generated dataset changed'
  return images


def _report(args):
  with open(os.path.join(args.model_run_dir, names.TRAINING_REPORT_FILE)) as f:
    return json.load(f)


def _learned_words(transformed):
  vocabulary = tft.TFTransformOutput(transformed.transform_graph_uri).vocabulary_by_name(
      features.VOCABULARY_NAME)
  return [w.decode('utf-8') for w in vocabulary]


def _caption(args, images):
  """Calls the exported serving_default signature; returns (captions, float32 log-probabilities)."""
  answer = captioning.SavedModelCaptioner(args.serving_model_dir)(images)
  return answer.captions, np.array(answer.log_probabilities, np.float32)


def _assert_real_captions(captions, log_probs, transformed):
  learned = set(_learned_words(transformed))
  for caption in captions:
    assert caption == caption.strip() and '  ' not in caption, f'badly joined caption {caption!r}'
    assert set(caption.split()) <= learned, f'{caption!r} holds a special token or an unknown word'
  assert np.all(np.isfinite(log_probs)) and np.all(log_probs <= 0), log_probs


def _decoder_variable_names(args):
  return {v.name for v in tf.saved_model.load(args.serving_model_dir).decoder_variables}


def test_captioner_exports_signatures_that_caption_image_bytes(captioner, transformed, demo_images):
  captions, log_probs = _caption(captioner, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  # The image reaches the decoder: different pictures, different probabilities.
  assert len(set(np.round(log_probs, 4))) > 1, log_probs
  # Batch 1 gives what the batch gave.
  single, single_log_prob = _caption(captioner, demo_images[:1])
  assert single == captions[:1]
  np.testing.assert_allclose(single_log_prob, log_probs[:1], rtol=1e-4)
  # The tf.Example signature reads the same images out of the raw examples.
  loaded = tf.saved_model.load(captioner.serving_model_dir)
  from_examples = loaded.signatures[features.EXAMPLES_SIGNATURE](
      **{features.EXAMPLES_INPUT: tf.constant(transformed.raw_examples(features.DEMO_SPLIT))})
  assert [c.decode('utf-8') for c in from_examples[features.CAPTION_OUTPUT].numpy()] == captions
  np.testing.assert_allclose(from_examples[features.LOG_PROBABILITY_OUTPUT].numpy(), log_probs, rtol=1e-5)


def test_training_report_matches_the_transform_output(captioner, transformed):
  report = _report(captioner)
  assert report['vocabulary_size'] == features.NUM_SPECIAL_TOKENS + len(_learned_words(transformed))
  records = tf.data.TFRecordDataset(
      glob.glob(captioner.train_files[0]), compression_type='GZIP').take(1)
  example = tf.train.Example.FromString(next(iter(records)).numpy())
  assert report['sequence_length'] == example.features.feature[features.SEQUENCE_LENGTH_KEY].int64_list.value[0]
  assert report['config'] == captioner.custom_config
  history = report['history']
  assert len(history['loss']) == len(history['val_loss']) == 2
  assert all(math.isfinite(v) for v in history['loss'] + history['val_loss'])
  assert history['loss'][1] < history['loss'][0], 'the second epoch did not lower the training loss'


def test_tensorboard_logs_hold_the_epoch_losses(captioner):
  for run in ('train', 'validation'):
    event_files = glob.glob(os.path.join(captioner.model_run_dir, run, 'events.out.tfevents.*'))
    assert event_files, f'no TensorBoard events in {captioner.model_run_dir}/{run}'
    tags = {value.tag for path in event_files for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert 'epoch_loss' in tags, (run, tags)


def test_augmented_training_exports_a_captioner(transformed, tmp_path_factory, demo_images):
  args = _train(transformed, tmp_path_factory, augment=True)
  captions, log_probs = _caption(args, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  assert len(set(np.round(log_probs, 4))) > 1, log_probs
  report = _report(args)
  assert report['config']['augment'] is True
  assert all(math.isfinite(v) for v in report['history']['loss'])


def test_captions_only_baseline_ignores_the_image(transformed, tmp_path_factory, demo_images):
  args = _train(transformed, tmp_path_factory, use_image=False)
  captions, log_probs = _caption(args, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  assert len(set(captions)) == 1, captions
  np.testing.assert_allclose(log_probs, log_probs[0], rtol=1e-6)
  names = _decoder_variable_names(args)
  assert not any(n.startswith('image_embedding/') for n in names), names
  assert _report(args)['vocabulary_size'] == features.NUM_SPECIAL_TOKENS + len(_learned_words(transformed))


def test_two_lstm_layers_are_trained_and_exported(transformed, tmp_path_factory, captioner, demo_images):
  args = _train(transformed, tmp_path_factory, num_layers=2)
  captions, log_probs = _caption(args, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  one_layer = _decoder_variable_names(captioner)
  two_layers = _decoder_variable_names(args)
  added = two_layers - one_layer
  assert added and all(n.startswith('lstm_1/') for n in added), added
  assert not one_layer - two_layers
  assert _report(args)['config']['num_layers'] == 2


def test_missing_transformed_examples_fail_naming_the_pattern(transformed, tmp_path):
  args = transformed_data.fn_args(transformed, str(tmp_path), config_lib.TrainerConfig(**_TINY))
  args.train_files = [str(tmp_path / 'nowhere' / '*')]
  with pytest.raises(FileNotFoundError, match='nowhere'):
    trainer.run_fn(args)
