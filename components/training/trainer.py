"""Trainer module code: fits the captioner (Show and Tell, or the attention decoder) and exports it.

Input: the Transform output (see components/training/datasets.py) and, for the
captioner, the ImageFeatureGen's artifact (components/encoder/features_artifact.py),
whose uri the CaptionTrainer executor hands run_fn as
`fn_args.image_features_uri` (components/training/trainer_component.py). That
artifact is the one source of the encoder: its saved backbone (input size,
pooling, precision, weights) is what the model trains on and exports, and its
EncoderInfo is copied into the serving model; `TrainerConfig.augment` says
whether to augment, and `TrainerConfig.image_size` gives the baseline, which
has no backbone, the size its serving graph decodes images to.

Speed: the backbone is frozen, so without augmentation its features are a
pure function of the image; the ImageFeatureGen computed them once per image
and the Trainer only reads them (the "bottleneck" features), so retraining with
other decoder or training settings runs no backbone at all. With augmentation
on, every epoch sees new pixels, so the backbone runs inside the training model.
Either way the exported model embeds the artifact's own backbone SavedModel:
image bytes in, exactly the network that produced the features inside.

Devices: the model is built under a `tf.distribute.MirroredStrategy`, which uses
every visible GPU and falls back to the CPU; mixed precision is optional.

With `scst_epochs` > 0, self-critical sequence training on CIDEr-D follows
the cross-entropy epochs (components/training/scst.py), from the same cached
features; the model as cross-entropy left it is exported too, into
model_run/names.CROSS_ENTROPY_MODEL_DIR, so the stage's effect can be measured
on one training (bench/quality.py). Every exported model records the stages
it went through (components/training/stages.py).

The same `run_fn` trains the captions-only language model (`use_image=False`,
no features needed): the baseline the captioner has to beat.
"""
import functools
import json
import logging
import math
import os
from typing import Dict, List, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components import config as config_lib
from components import names
from components.encoder import features_artifact
from components.encoder import precision as precision_lib
from components.training import datasets
from components.training import exporter
from components.training import model as model_lib
from components.training import callbacks as callbacks_lib
from components.training import scst
from components.training import stages


def image_features_uri(fn_args: FnArgs, config: config_lib.TrainerConfig) -> Optional[str]:
  """The ImageFeatures artifact's uri (trainer_component.CaptionFnArgs); None for the baseline.

  Raises:
    ValueError: if the captioner was given no ImageFeatures artifact.
  """
  uri = getattr(fn_args, 'image_features_uri', None)
  if config.use_image and uri is None:
    raise ValueError(f'The captioner trains from an ImageFeatureGen artifact, and run_fn got none '
                     f'(wire {names.IMAGE_FEATURES_KEY!r} into the CaptionTrainer).')
  return uri if config.use_image else None


def learning_rate(config: config_lib.TrainerConfig, epoch: int) -> float:
  """The learning rate of `epoch` (0-based) under `config.learning_rate_schedule`."""
  if config.learning_rate_schedule == 'constant':
    return config.learning_rate
  if config.learning_rate_schedule == 'cosine':
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
  raise ValueError(f'Unknown learning_rate_schedule {config.learning_rate_schedule!r}; '
                   f'known: {config_lib.LEARNING_RATE_SCHEDULES}')


def callbacks(fn_args: FnArgs, config: config_lib.TrainerConfig) -> List[keras.callbacks.Callback]:
  """Every callback of `fit`, built in one place.

  The schedule sets the rate from the epoch number at each epoch's start, so a
  training resumed from its backup continues on the same schedule.
  """
  return [
      keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
      keras.callbacks.LearningRateScheduler(lambda epoch: learning_rate(config, epoch)),
      keras.callbacks.EarlyStopping(monitor='val_loss', patience=config.early_stopping_patience,
                                    min_delta=config.early_stopping_min_delta,
                                    restore_best_weights=True),
  ]


def run_fn(fn_args: FnArgs) -> None:
  """TFX Trainer entry point: trains, then exports the caption SavedModel."""
  config = config_lib.from_custom_config(config_lib.TrainerConfig, fn_args.custom_config)
  scst.check_config(config)
  callbacks_lib.make_deterministic(config.seed)
  features_uri = image_features_uri(fn_args, config)
  if config.mixed_precision and tf.config.list_physical_devices('GPU'):
    keras.mixed_precision.set_global_policy('mixed_float16')
  strategy = tf.distribute.MirroredStrategy()
  logging.info('Training on %d replica(s) with %s', strategy.num_replicas_in_sync, config)

  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  vocabulary = datasets.vocabulary(tf_transform_output)
  train_images = datasets.images_and_captions(fn_args.train_files, tf_transform_output)
  eval_images = datasets.images_and_captions(fn_args.eval_files, tf_transform_output)
  sequence_length = datasets.sequence_length(train_images)

  grid_shape = features_artifact.artifact_encoder_info(features_uri).grid_shape if features_uri else None
  with strategy.scope():
    feature_extractor = (features_artifact.load_backbone(features_uri) if config.use_image
                         else model_lib.pixel_blind_extractor(config.image_size))
    caption_model, training_model = model_lib.build_models(
        config, len(vocabulary), sequence_length, feature_extractor, grid_shape)

  train_per_image, eval_per_image = (
      _image_inputs(config, per_image, split, feature_extractor, features_uri)
      for per_image, split in ((train_images, names.TRAIN_SPLIT), (eval_images, names.EVAL_SPLIT)))
  training_run = callbacks_lib.TrainingRun(fn_args)
  history = training_model.fit(
      datasets.training_batches(train_per_image, config.batch_size, shuffle=True,
                                use_image=config.use_image,
                                captions=datasets.caption_count(train_images)),
      validation_data=datasets.training_batches(eval_per_image, config.batch_size, shuffle=False,
                                                use_image=config.use_image,
                                                captions=datasets.caption_count(eval_images)),
      epochs=config.epochs,
      callbacks=callbacks(fn_args, config) + training_run.callbacks(),
      verbose=2)
  export = functools.partial(
      _export, feature_extractor=feature_extractor, decoder=model_lib.step_decoder(caption_model),
      vocabulary=vocabulary, max_length=sequence_length - 1, beam_width=config.beam_width,
      features_uri=features_uri, decoder_name=decoder_name(config))
  scst_history = None
  if config.scst_epochs:
    export(os.path.join(fn_args.model_run_dir, names.CROSS_ENTROPY_MODEL_DIR), [stages.CROSS_ENTROPY])
    scst_history = scst.fine_tune(caption_model, config, train_per_image, len(vocabulary),
                                  sequence_length - 1, strategy, callbacks_lib.node_id(fn_args))
  export(fn_args.serving_model_dir, stages.of(config))
  _write_report(fn_args.model_run_dir, {
      'vocabulary_size': len(vocabulary),
      'sequence_length': sequence_length,
      'config': config_lib.to_custom_config(config),
      'decoder': decoder_name(config),
      'decoder_precision': precision_lib.resolve(config.decoder_precision),
      'image_features_uri': features_uri,
      'resumed_from_epoch': training_run.resumed_from_epoch,
      'history': {k: [float(v) for v in vs] for k, vs in history.history.items()},
      'epoch_seconds': training_run.epoch_seconds,
      'stages': stages.of(config),
      'scst': scst_history,
  })


def _image_inputs(config: config_lib.TrainerConfig, per_image: tf.data.Dataset, split: str,
                  feature_extractor: keras.Model, features_uri: Optional[str]) -> tf.data.Dataset:
  """What the model reads of each image of `split`: nothing (the baseline), the
  artifact's cached features (held in memory, or streamed from its files where stored in a
  compact dtype: the grids), or, with augmentation, pixels at its backbone's input size."""
  if not config.use_image:
    return datasets.without_image(per_image)
  if config.augment:
    return datasets.with_pixels(per_image, feature_extractor.input_shape[1])
  if features_artifact.artifact_encoder_info(features_uri).feature_dtype != 'float32':
    return datasets.with_streamed_features(per_image, features_uri, split)  # grids: too large to hold
  return datasets.with_cached_features(per_image, features_artifact.read_features(features_uri, split),
                                       f'split {split!r} of {features_uri}')


def decoder_name(config: config_lib.TrainerConfig) -> str:
  """The decoder a config trains (the captions-only baseline is Show and Tell's language model)."""
  return config.decoder if config.use_image else config_lib.SHOW_AND_TELL


def _export(model_dir: str, trained_stages: List[str], feature_extractor: keras.Model,
            decoder: model_lib.CaptionDecoder, vocabulary: List[str], max_length: int, beam_width: int,
            features_uri: Optional[str], decoder_name: str) -> None:
  """The serving SavedModel, with the encoder it embeds (the features artifact's, for the
  evaluator's feature cache), the training stages its weights went through and its decoder."""
  exporter.export_serving_model(model_dir, feature_extractor, decoder, vocabulary, max_length=max_length,
                                beam_width=beam_width)
  if features_uri is not None:
    features_artifact.write_encoder_info(features_artifact.artifact_encoder_info(features_uri),
                                         os.path.join(model_dir, names.SERVING_ENCODER_FILE))
  stages.write(model_dir, trained_stages, decoder_name)


def _write_report(model_run_dir: str, report: Dict) -> None:
  with tf.io.gfile.GFile(os.path.join(model_run_dir, names.TRAINING_REPORT_FILE), 'w') as f:
    json.dump(report, f, indent=2)
  logging.info('Vocabulary %d words, sequence length %d, best val_loss %.3f',
               report['vocabulary_size'], report['sequence_length'],
               min(report['history'].get('val_loss', [float('nan')])))
