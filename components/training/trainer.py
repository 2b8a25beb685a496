"""Trainer module code: fits the Show-and-Tell captioner and exports it.

Input: the Transform output (see components/training/datasets.py) and, for the
captioner, the ImageFeatureGen's artifact (components/encoder/feature_gen.py),
whose uri the CaptionTrainer executor puts into `custom_config` under
names.IMAGE_FEATURES_URI_KEY (components/training/trainer_component.py).

Speed: the backbone is frozen, so without augmentation its features are a
pure function of the image; the ImageFeatureGen computed them once per image
and the Trainer only reads them (the brief's "bottleneck"), so retraining with
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

The same `run_fn` trains the captions-only language model (the brief's step 2,
`use_image=False`, no features needed): the baseline the captioner has to beat.
"""
import functools
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components import config as config_lib
from components import features
from components import names
from components.encoder import feature_gen
from components.encoder import image_features
from components.training import datasets
from components.training import exporter
from components.training import model as model_lib
from components.training import callbacks as callbacks_lib
from components.training import scst
from components.training import stages


def split_custom_config(custom_config: Optional[Dict[str, Any]]
                        ) -> Tuple[config_lib.TrainerConfig, Optional[str]]:
  """(TrainerConfig, ImageFeatures uri or None) from the Trainer's custom_config."""
  custom_config = dict(custom_config or {})
  image_features_uri = custom_config.pop(names.IMAGE_FEATURES_URI_KEY, None)
  return config_lib.from_custom_config(config_lib.TrainerConfig, custom_config), image_features_uri


def check_encoder(config: config_lib.TrainerConfig, image_features_uri: Optional[str]
                  ) -> feature_gen.EncoderInfo:
  """The ImageFeatures artifact's EncoderInfo; ValueError unless it matches `config`'s encoder.

  The pipeline derives both from one TrainerConfig; a mismatch means the
  Trainer was wired to features of another encoder.
  """
  if image_features_uri is None:
    raise ValueError('The captioner trains from an ImageFeatureGen artifact: custom_config has no '
                     f'{names.IMAGE_FEATURES_URI_KEY!r} (wire image_features into the CaptionTrainer).')
  info = feature_gen.read_encoder_info(os.path.join(image_features_uri, names.ENCODER_FILE))
  wanted = (config.backbone, image_features.image_size_of(config.backbone, config.image_size),
            config.pooling, config.backbone_weights or 'none')
  if (info.backbone, info.image_size, info.pooling, info.weights) != wanted:
    raise ValueError(f'The features in {image_features_uri} come from {info}, but the trainer is '
                     f'configured for (backbone, image_size, pooling, weights) {wanted}.')
  return info


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
  config, image_features_uri = split_custom_config(fn_args.custom_config)
  scst.check_config(config)
  callbacks_lib.make_deterministic(config.seed)
  encoder_info = check_encoder(config, image_features_uri) if config.use_image else None
  if config.mixed_precision and tf.config.list_physical_devices('GPU'):
    keras.mixed_precision.set_global_policy('mixed_float16')
  strategy = tf.distribute.MirroredStrategy()
  logging.info('Training on %d replica(s) with %s', strategy.num_replicas_in_sync, config)

  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  vocabulary = datasets.vocabulary(tf_transform_output)
  train_images = datasets.images_and_captions(fn_args.train_files, tf_transform_output)
  eval_images = datasets.images_and_captions(fn_args.eval_files, tf_transform_output)
  sequence_length = datasets.sequence_length(train_images)
  image_size = image_features.image_size_of(config.backbone, config.image_size)

  with strategy.scope():
    feature_extractor = (feature_gen.load_backbone(image_features_uri) if config.use_image
                         else model_lib.pixel_blind_extractor(image_size))
    caption_model, training_model = model_lib.build_models(
        config, len(vocabulary), sequence_length, feature_extractor)

  if not config.use_image:
    train_per_image = datasets.without_image(train_images)
    eval_per_image = datasets.without_image(eval_images)
  elif config.augment:
    train_per_image = datasets.with_pixels(train_images, image_size)
    eval_per_image = datasets.with_pixels(eval_images, image_size)
  else:
    train_per_image, eval_per_image = (
        datasets.with_cached_features(per_image, feature_gen.read_features(image_features_uri, split),
                                      f'split {split!r} of {image_features_uri}')
        for per_image, split in ((train_images, features.TRAIN_SPLIT), (eval_images, features.EVAL_SPLIT)))

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
      _export, feature_extractor=feature_extractor, decoder=model_lib.CaptionDecoder(caption_model),
      vocabulary=vocabulary, max_length=sequence_length - 1, beam_width=config.beam_width,
      encoder_info=encoder_info)
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
      'image_features_uri': image_features_uri,
      'resumed_from_epoch': training_run.resumed_from_epoch,
      'history': {k: [float(v) for v in vs] for k, vs in history.history.items()},
      'epoch_seconds': training_run.epoch_seconds,
      'stages': stages.of(config),
      'scst': scst_history,
  })


def _export(model_dir: str, trained_stages: List[str], feature_extractor: keras.Model,
            decoder: model_lib.CaptionDecoder, vocabulary: List[str], max_length: int, beam_width: int,
            encoder_info: Optional[feature_gen.EncoderInfo]) -> None:
  """The serving SavedModel, with the encoder it embeds (for the evaluator's feature cache) and
  the training stages its weights went through."""
  exporter.export_serving_model(model_dir, feature_extractor, decoder, vocabulary, max_length=max_length,
                                beam_width=beam_width)
  if encoder_info is not None:
    feature_gen.write_encoder_info(encoder_info, os.path.join(model_dir, names.SERVING_ENCODER_FILE))
  stages.write(model_dir, trained_stages)


def _write_report(model_run_dir: str, report: Dict) -> None:
  with tf.io.gfile.GFile(os.path.join(model_run_dir, names.TRAINING_REPORT_FILE), 'w') as f:
    json.dump(report, f, indent=2)
  logging.info('Vocabulary %d words, sequence length %d, best val_loss %.3f',
               report['vocabulary_size'], report['sequence_length'],
               min(report['history'].get('val_loss', [float('nan')])))
