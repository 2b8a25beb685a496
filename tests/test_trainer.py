"""Tests of the Trainer's run_fn on real Transform output of a tiny generated dataset.

testing/transformed_data.py runs the ExampleGen, the stock TFX Transform executor and
the ImageFeatureGen executor once per module (40 images at 32 px: 30 train, 5 eval,
5 demo); each run_fn below trains a tiny model (random VGG16 at 32 px, 16-unit
LSTM) from those features and its exported SavedModel is loaded and called on the
demo split's JPEG bytes. The ImageFeatureGen's artifact and captioning from it
(components/evaluation/captioning.py, with its parity check) are tested here too,
on the same artifacts, since they need a captioner trained from it.
"""
import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import re

import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from testing import executors
from testing import transformed_data
from components import artifacts
from components import names
from components import progress
from components import records
from components.encoder import features_artifact
from components.encoder import parity
from components.encoder import feature_gen
from components.evaluation import captioning
from components.training import callbacks
from components.training import datasets
from components.training import model as model_lib
from components.training import stages
from components.training import trainer
from components import config as config_lib
from components.encoder import precision as precision_lib

NUM_IMAGES = 40
IMAGE_SIZE = 32
_TINY_ENCODER = config_lib.EncoderConfig(backbone_weights=None, image_size=IMAGE_SIZE, pooling='flatten')
_TINY = dict(image_size=IMAGE_SIZE, embedding_dim=16,
             lstm_units=16, batch_size=16, epochs=1)


@pytest.fixture(scope='module')
def transformed(tmp_path_factory):
  return transformed_data.build_transformed_data(str(tmp_path_factory.mktemp('transform')), NUM_IMAGES, IMAGE_SIZE)


@pytest.fixture(scope='module')
def image_features(transformed, tmp_path_factory):
  """The ImageFeatureGen's artifact for the tiny encoder settings (random VGG16, 32 px, flatten)."""
  return transformed_data.build_image_features(transformed.examples_uri, str(tmp_path_factory.mktemp('features')),
                                               _TINY_ENCODER)


def _train(transformed, image_features, tmp_path_factory, **overrides):
  """Runs run_fn with the tiny settings plus `overrides` on the cached features; returns its FnArgs."""
  config = config_lib.TrainerConfig(**{**_TINY, **overrides})
  args = transformed_data.fn_args(transformed, str(tmp_path_factory.mktemp('trainer')), config,
                                  image_features.uri)
  trainer.run_fn(args)
  return args


@pytest.fixture(scope='module')
def captioner(transformed, image_features, tmp_path_factory):
  """The default path: the ImageFeatureGen's cached features, two epochs."""
  return _train(transformed, image_features, tmp_path_factory, epochs=2)


@pytest.fixture(scope='module')
def demo_images(transformed):
  images = transformed.images(names.DEMO_SPLIT)
  assert len(images) == NUM_IMAGES // 8, 'the 6:1:1 split of the generated dataset changed'
  return images


@pytest.fixture(scope='module')
def examples(transformed):
  """The raw Examples artifact of the generated dataset."""
  artifact = standard_artifacts.Examples()
  artifact.uri = transformed.examples_uri
  artifact.split_names = artifact_utils.encode_split_names(list(names.SPLITS))
  return artifact


def _report(args):
  with open(os.path.join(args.model_run_dir, names.TRAINING_REPORT_FILE)) as f:
    return json.load(f)


def _learned_words(transformed):
  vocabulary = tft.TFTransformOutput(transformed.transform_graph_uri).vocabulary_by_name(
      names.VOCABULARY_NAME)
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
  from_examples = loaded.signatures[names.EXAMPLES_SIGNATURE](
      **{names.EXAMPLES_INPUT: tf.constant(transformed.raw_examples(names.DEMO_SPLIT))})
  assert [c.decode('utf-8') for c in from_examples[names.CAPTION_OUTPUT].numpy()] == captions
  np.testing.assert_allclose(from_examples[names.LOG_PROBABILITY_OUTPUT].numpy(), log_probs, rtol=1e-5)


def test_training_report_matches_the_transform_output(captioner, transformed):
  report = _report(captioner)
  assert report['vocabulary_size'] == names.NUM_SPECIAL_TOKENS + len(_learned_words(transformed))
  records = tf.data.TFRecordDataset(
      glob.glob(captioner.train_files[0]), compression_type='GZIP').take(1)
  example = tf.train.Example.FromString(next(iter(records)).numpy())
  assert report['sequence_length'] == example.features.feature[names.SEQUENCE_LENGTH_KEY].int64_list.value[0]
  config = config_lib.from_custom_config(config_lib.TrainerConfig, captioner.custom_config)
  assert report['config'] == captioner.custom_config
  assert report['image_features_uri'] == captioner.image_features_uri is not None
  assert report['decoder_precision'] == precision_lib.resolve(config.decoder_precision)
  history = report['history']
  assert len(history['loss']) == len(history['val_loss']) == 2
  assert all(math.isfinite(v) for v in history['loss'] + history['val_loss'])
  assert history['loss'][1] < history['loss'][0], 'the second epoch did not lower the training loss'
  # The cosine schedule: the full rate in the first epoch, half of it in the second of two.
  assert history['lr'] == pytest.approx([config.learning_rate, config.learning_rate / 2])


def test_a_long_epoch_reports_its_batches_and_time_left(transformed, image_features, caplog):
  """The in-epoch progress line, here after every batch (interval 0), with the epoch's total known."""
  tf_transform_output = tft.TFTransformOutput(transformed.transform_graph_uri)
  train_images = datasets.images_and_captions(transformed.transformed_files(names.TRAIN_SPLIT),
                                              tf_transform_output)
  captions = datasets.caption_count(train_images)
  batches = datasets.training_batches(
      datasets.with_cached_features(train_images, features_artifact.read_features(image_features.uri,
                                                                            names.TRAIN_SPLIT), 'train'),
      batch_size=16, shuffle=True, use_image=True, captions=captions)
  steps = -(-captions // 16)
  config = config_lib.TrainerConfig(**_TINY)
  _, training_model = model_lib.build_models(config, len(datasets.vocabulary(tf_transform_output)),
                                             datasets.sequence_length(train_images),
                                             features_artifact.load_backbone(image_features.uri))
  with caplog.at_level(logging.INFO, logger=progress.logger.name):
    training_model.fit(batches, epochs=1, verbose=0,
                       callbacks=[callbacks.EpochLine('CaptionTrainer', interval_seconds=0)])
  lines = [record.getMessage() for record in caplog.records if record.name == progress.logger.name]
  assert [re.sub(r', \d+:\d\d.*', '', line) for line in lines[:-1]] == [
      f'  CaptionTrainer epoch 1/1: batch {done}/{steps}' for done in range(1, steps + 1)]
  assert all(re.search(r', \d+:\d\d, about \d+:\d\d left$', line) for line in lines[:-1]), lines
  assert re.fullmatch(r'  CaptionTrainer epoch 1/1: loss [\d.]+, val_loss nan, [\d.]+ s', lines[-1]), lines


def test_tensorboard_logs_hold_the_epoch_losses(captioner):
  for run in ('train', 'validation'):
    event_files = glob.glob(os.path.join(captioner.model_run_dir, run, 'events.out.tfevents.*'))
    assert event_files, f'no TensorBoard events in {captioner.model_run_dir}/{run}'
    tags = {value.tag for path in event_files for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value}
    assert 'epoch_loss' in tags, (run, tags)


def test_augmented_training_exports_a_captioner(transformed, image_features, tmp_path_factory, demo_images):
  args = _train(transformed, image_features, tmp_path_factory,
                augment=True)
  captions, log_probs = _caption(args, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  assert len(set(np.round(log_probs, 4))) > 1, log_probs
  report = _report(args)
  assert report['config']['augment'] is True
  assert all(math.isfinite(v) for v in report['history']['loss'])


def test_captions_only_baseline_ignores_the_image(transformed, image_features, tmp_path_factory,
                                                  demo_images):
  args = _train(transformed, image_features, tmp_path_factory, use_image=False)
  captions, log_probs = _caption(args, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  assert len(set(captions)) == 1, captions
  np.testing.assert_allclose(log_probs, log_probs[0], rtol=1e-6)
  variables = _decoder_variable_names(args)
  assert not any(n.startswith('image_embedding/') for n in variables), variables
  assert _report(args)['vocabulary_size'] == names.NUM_SPECIAL_TOKENS + len(_learned_words(transformed))


def test_two_lstm_layers_are_trained_and_exported(transformed, image_features, tmp_path_factory, captioner,
                                                  demo_images):
  args = _train(transformed, image_features, tmp_path_factory, num_layers=2)
  captions, log_probs = _caption(args, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  one_layer = _decoder_variable_names(captioner)
  two_layers = _decoder_variable_names(args)
  added = two_layers - one_layer
  assert added and all(n.startswith('lstm_1/') for n in added), added
  assert not one_layer - two_layers
  assert _report(args)['config']['num_layers'] == 2


def test_self_critical_stage_fine_tunes_exports_and_records_its_stages(transformed, image_features,
                                                                       tmp_path_factory, captioner,
                                                                       demo_images):
  """scst_epochs=1 after cross-entropy: the exported SavedModel still captions, with other weights,
  and the report and the SavedModel say which stages it went through."""
  args = _train(transformed, image_features, tmp_path_factory, epochs=2, scst_epochs=1, scst_samples=2)
  captions, log_probs = _caption(args, demo_images)
  _assert_real_captions(captions, log_probs, transformed)
  report = _report(args)
  assert report['stages'] == [stages.CROSS_ENTROPY, stages.SCST]
  assert stages.read(args.serving_model_dir) == [stages.CROSS_ENTROPY, stages.SCST]
  assert stages.read(captioner.serving_model_dir) == [stages.CROSS_ENTROPY]
  assert _report(captioner)['stages'] == [stages.CROSS_ENTROPY] and _report(captioner)['scst'] is None
  history = report['scst']
  assert len(history['sample_cider']) == len(history['greedy_cider']) == len(history['seconds']) == 1
  assert all(math.isfinite(v) and v >= 0 for v in history['sample_cider'] + history['greedy_cider'])
  # Same seed and cross-entropy epochs as `captioner`: the model exported before the stage is
  # `captioner`'s, and only the stage changed the weights.
  assert report['history']['loss'] == _report(captioner)['history']['loss']
  before = os.path.join(args.model_run_dir, names.CROSS_ENTROPY_MODEL_DIR)
  assert stages.read(before) == [stages.CROSS_ENTROPY]
  captioner_captions, captioner_log_probs = _caption(captioner, demo_images)
  before_captions, before_log_probs = captioning.SavedModelCaptioner(before)(demo_images)
  assert before_captions == captioner_captions
  np.testing.assert_allclose(before_log_probs, captioner_log_probs, rtol=1e-5)
  assert not np.allclose(log_probs, captioner_log_probs), (log_probs, captioner_log_probs)
  assert not os.path.exists(os.path.join(captioner.model_run_dir, names.CROSS_ENTROPY_MODEL_DIR))


def test_missing_transformed_examples_fail_naming_the_pattern(transformed, image_features, tmp_path):
  args = transformed_data.fn_args(transformed, str(tmp_path), config_lib.TrainerConfig(**_TINY),
                                  image_features.uri)
  args.train_files = [str(tmp_path / 'nowhere' / '*')]
  with pytest.raises(FileNotFoundError, match='nowhere'):
    trainer.run_fn(args)


def test_cached_features_equal_the_serving_graphs_features(captioner, image_features, transformed):
  """The exported model embeds the artifact's backbone: same bytes, same features, same captions."""
  cached = features_artifact.read_features(image_features.uri, names.DEMO_SPLIT)
  ids = [records.parse_image_example(r).image_id for r in transformed.raw_examples(names.DEMO_SPLIT)]
  images = transformed.images(names.DEMO_SPLIT)
  loaded = tf.saved_model.load(captioner.serving_model_dir)
  served = loaded.encode_images(tf.constant(images)).numpy()
  np.testing.assert_array_equal(served, np.stack([cached[i] for i in ids]))
  from_features = loaded.signatures[names.FEATURES_SIGNATURE](
      **{names.IMAGE_FEATURES_KEY: tf.constant(np.stack([cached[i] for i in ids]))})
  captions, log_probs = _caption(captioner, images)
  assert [c.decode('utf-8') for c in from_features[names.CAPTION_OUTPUT].numpy()] == captions
  np.testing.assert_array_equal(from_features[names.LOG_PROBABILITY_OUTPUT].numpy(), log_probs)
  # The SavedModel says which encoder it embeds, for the evaluator's cache check.
  info = features_artifact.read_encoder_info(os.path.join(captioner.serving_model_dir, names.SERVING_ENCODER_FILE))
  assert info == features_artifact.read_encoder_info(os.path.join(image_features.uri, names.ENCODER_FILE))
  assert features_artifact.backbone_passes(image_features) == NUM_IMAGES


def test_captioner_without_features_fails(transformed, tmp_path):
  config = config_lib.TrainerConfig(**_TINY)
  with pytest.raises(ValueError, match='ImageFeatureGen artifact'):
    trainer.run_fn(transformed_data.fn_args(transformed, str(tmp_path / 'a'), config))


# --- The ImageFeatureGen's artifact, and captioning from it ---

def _ids(transformed, split):
  return [records.parse_image_example(r).image_id for r in transformed.raw_examples(split)]


def test_every_image_of_every_split_gets_one_feature_vector(transformed, image_features):
  for split in names.SPLITS:
    vectors = features_artifact.read_features(image_features.uri, split)
    assert sorted(vectors) == sorted(_ids(transformed, split)), split
    assert {v.shape for v in vectors.values()} == {(512,)}  # VGG16's last conv block at 32 px: 1x1x512
  assert features_artifact.backbone_passes(image_features) == NUM_IMAGES


def test_artifact_records_and_carries_its_backbone(transformed, image_features):
  info = features_artifact.read_encoder_info(os.path.join(image_features.uri, names.ENCODER_FILE))
  assert (info.backbone, info.weights, info.image_size, info.pooling, info.feature_dim) == (
      'vgg16', None, IMAGE_SIZE, 'flatten', 512)
  for field in ('backbone', 'weights_fingerprint', 'pooling'):
    assert image_features.get_string_custom_property(field) == getattr(info, field)
  backbone = features_artifact.load_backbone(image_features.uri)
  assert features_artifact.weights_fingerprint(backbone.weights) == info.weights_fingerprint
  # The saved backbone recomputes the cached vectors from the image bytes.
  ids, images = _ids(transformed, names.EVAL_SPLIT), transformed.images(names.EVAL_SPLIT)
  cached = features_artifact.read_features(image_features.uri, names.EVAL_SPLIT)
  recomputed = backbone(tf.stack([tf.image.resize(tf.io.decode_image(i, channels=3), [IMAGE_SIZE] * 2)
                                  for i in images]))
  np.testing.assert_array_equal(recomputed.numpy(), np.stack([cached[i] for i in ids]))


def test_captions_from_the_cache_equal_captions_from_bytes(captioner, examples, image_features):
  model_dir = captioner.serving_model_dir
  from_bytes = captioning.caption_split(model_dir, examples, names.DEMO_SPLIT, batch_size=2)
  from_cache = captioning.caption_split(model_dir, examples, names.DEMO_SPLIT, batch_size=2,
                                        image_features_uri=image_features.uri)
  assert from_cache.captions == from_bytes.captions
  assert from_cache.log_probabilities == from_bytes.log_probabilities
  assert from_bytes.serving_images == NUM_IMAGES // 8 and from_cache.serving_images == 0


def _tampered_copy(image_features, split, image_id, tmp_path):
  """A copy of the artifact in which `image_id`'s vector of `split` is changed."""
  tampered = str(tmp_path / 'features')
  shutil.copytree(image_features.uri, tampered)
  split_dir = features_artifact.split_dir(tampered, split)
  shutil.rmtree(split_dir)
  os.makedirs(split_dir)
  vectors = features_artifact.read_features(image_features.uri, split)
  with tf.io.TFRecordWriter(os.path.join(split_dir, 'features-00000-of-00001.gz'), 'GZIP') as writer:
    for key in sorted(vectors):
      changed = vectors[key] * 50.0 + 1.0 if key == image_id else vectors[key]
      writer.write(features_artifact.feature_example(key, changed))
  return tampered


def test_the_feature_pass_checked_parity_on_every_split(transformed, image_features):
  expected = sum(min(parity.DEFAULT_PARITY_SAMPLE, len(_ids(transformed, split))) for split in names.SPLITS)
  assert 0 < expected == image_features.get_int_custom_property(features_artifact.PARITY_PASSES_PROPERTY)


def test_parity_failure_names_the_images(examples, image_features, tmp_path):
  first = next(records.iter_split_examples(examples, names.DEMO_SPLIT)).image_id
  tampered = _tampered_copy(image_features, names.DEMO_SPLIT, first, tmp_path)
  assert parity.check_parity(image_features.uri, examples, names.SPLITS, 2) == 2 * len(names.SPLITS)
  with pytest.raises(parity.ParityError,
                     match=rf"disagree on 1 of 2 images of split 'demo': \['{first}'\] \(largest difference"):
    parity.check_parity(tampered, examples, [names.DEMO_SPLIT], 2)


def test_a_model_whose_encoder_weights_differ_is_refused(captioner, examples, image_features, tmp_path):
  """A model that claims the artifact's encoder is checked against its weights, not its claim."""
  claimed = dataclasses.replace(
      features_artifact.read_encoder_info(os.path.join(image_features.uri, names.ENCODER_FILE)),
      weights_fingerprint='0' * 64)
  other_features, other_model = str(tmp_path / 'features'), str(tmp_path / 'model')
  shutil.copytree(image_features.uri, other_features)
  shutil.copytree(captioner.serving_model_dir, other_model)
  features_artifact.write_encoder_info(claimed, os.path.join(other_features, names.ENCODER_FILE))
  features_artifact.write_encoder_info(claimed, os.path.join(other_model, names.SERVING_ENCODER_FILE))
  assert captioning.embeds_encoder_of(other_model, other_features)
  with pytest.raises(parity.ParityError, match='encoder weights .* are not the ones'):
    captioning.caption_split(other_model, examples, names.DEMO_SPLIT, image_features_uri=other_features)


def test_a_model_with_another_encoder_is_captioned_from_bytes(captioner, examples, image_features, tmp_path):
  other = str(tmp_path / 'other_model')
  shutil.copytree(captioner.serving_model_dir, other)
  os.remove(os.path.join(other, names.SERVING_ENCODER_FILE))
  assert not captioning.embeds_encoder_of(other, image_features.uri)
  result = captioning.caption_split(other, examples, names.DEMO_SPLIT,
                                    image_features_uri=image_features.uri)
  assert result.serving_images == NUM_IMAGES // 8


def test_a_local_weights_file_keys_the_feature_cache_on_its_content(transformed, tmp_path):
  weights = tmp_path / 'vgg16_notop.h5'
  weights.write_bytes(b'first weights')
  first = feature_gen.weights_file_digest(str(weights))
  assert first == hashlib.sha256(b'first weights').hexdigest()
  assert feature_gen.weights_file_digest('imagenet') is None and feature_gen.weights_file_digest(None) is None
  weights.write_bytes(b'other weights')  # replaced at the same path: another cache key
  assert feature_gen.weights_file_digest(str(weights)) != first
  # Replaced between building the pipeline and running the component: refused.
  examples = standard_artifacts.Examples()
  examples.uri = transformed.examples_uri
  examples.split_names = artifact_utils.encode_split_names(list(names.SPLITS))
  with pytest.raises(ValueError, match='vgg16_notop.h5 changed after the pipeline was built'):
    executors.run_executor(
        feature_gen.ImageFeatureGen.EXECUTOR_SPEC.executor_class(executors.beam_context()),
        {'examples': examples}, {names.IMAGE_FEATURES_KEY: artifacts.ImageFeatures},
        feature_gen.parameters(dataclasses.replace(_TINY_ENCODER, backbone_weights=str(weights), precision='float32'),
                               seed=0, backbone_weights_sha256=first), str(tmp_path / 'out'))


def test_the_features_join_accounts_for_every_image_both_ways(transformed, image_features):
  """Every transformed image needs its vector, every vector its transformed image, once: the
  join on the image id names what the Transform's output and the feature pass disagree on."""
  tf_transform_output = tft.TFTransformOutput(transformed.transform_graph_uri)
  train_images = datasets.images_and_captions(transformed.transformed_files(names.TRAIN_SPLIT),
                                              tf_transform_output)
  vectors = features_artifact.read_features(image_features.uri, names.TRAIN_SPLIT)
  first_id = next(iter(vectors))
  assert sum(1 for _ in datasets.with_cached_features(train_images, vectors, 'train')) == len(vectors)

  without_first = {k: v for k, v in vectors.items() if k != first_id}
  with pytest.raises(ValueError, match=rf"1 images have no features in train, e.g. \['{first_id}'\]"):
    datasets.with_cached_features(train_images, without_first, 'train')
  with pytest.raises(ValueError, match=r"1 images of train have features but no transformed example, "
                                       r"e.g. \['lost.jpg'\]"):
    datasets.with_cached_features(train_images, dict(vectors, **{'lost.jpg': vectors[first_id]}), 'train')
  with pytest.raises(ValueError, match='1 transformed examples repeat an image of train'):
    datasets.with_cached_features(train_images.concatenate(train_images.take(1)), vectors, 'train')


def test_the_baselines_captions_are_read_once_and_hold_no_image(transformed, tmp_path):
  """The baseline trains from its captions in memory: the examples (image bytes and all) are not
  read again every epoch."""
  copy = tmp_path / 'train'
  shutil.copytree(os.path.dirname(transformed.transformed_files(names.TRAIN_SPLIT)[0]), copy)
  tf_transform_output = tft.TFTransformOutput(transformed.transform_graph_uri)
  train_images = datasets.images_and_captions([str(copy / '*')], tf_transform_output)
  want = [ids for _, _, ids in train_images.as_numpy_iterator()]

  blind = datasets.without_image(train_images)
  shutil.rmtree(copy)  # an epoch that read the files again would fail here

  for _ in range(2):
    got = list(blind.as_numpy_iterator())
    assert [image.shape for image, _ in got] == [(0,)] * len(want)
    assert all(np.array_equal(ids, expected) for (_, ids), expected in zip(got, want)) and len(got) == len(want)
