"""Trainer module code: fits the Show-and-Tell captioner and exports it.

Input (Transform output, see components/training/transform.py): one example per image
with its encoded bytes and its captions as padded ids [captions, L]. Each
(image, caption) pair is one training example; the model reads ids[:, :-1]
(START .. last word) and predicts ids[:, 1:] (first word .. END).

Speed: the backbone is frozen, so without augmentation its features are a
pure function of the image. They are computed once per image (the brief's
"bottleneck") and cached for every epoch. With augmentation on, every epoch
sees new pixels, so the backbone runs inside the training model instead.

Devices: the model is built under a `tf.distribute.MirroredStrategy`, which uses
every visible GPU and falls back to the CPU; mixed precision is optional.

The same `run_fn` trains the captions-only language model (the brief's step 2,
`use_image=False`): the baseline the captioner has to beat.
"""
import json
import logging
import os
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components import features
from components import names
from components.encoder import augmentation, image_features
from components.training import callbacks as callbacks_lib, exporter, model as model_lib
from components import config as config_lib

# Shuffle buffer in (image, caption) pairs: a few epochs' worth of Flickr8k batches.
_SHUFFLE_BUFFER = 10000
# Images per backbone batch when computing the cached features.
_FEATURE_BATCH_SIZE = 32


def _tfrecord_files(patterns: List[str]) -> List[str]:
  files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f'No transformed examples match {patterns}')
  return files


def _images_and_captions(patterns: List[str], tf_transform_output) -> tf.data.Dataset:
  """Per image: (image bytes string [], caption ids int64 [captions, L])."""
  feature_spec = tf_transform_output.transformed_feature_spec()

  def parse(serialized):
    parsed = tf.io.parse_single_example(serialized, feature_spec)
    ids = tf.sparse.to_dense(parsed[features.CAPTION_IDS_KEY])
    ids = tf.reshape(ids, [-1, parsed[features.SEQUENCE_LENGTH_KEY]])
    return tf.reshape(parsed[features.IMAGE_KEY], []), ids

  return (tf.data.TFRecordDataset(_tfrecord_files(patterns), compression_type='GZIP')
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE))


def _sequence_length(dataset: tf.data.Dataset) -> int:
  for _, ids in dataset.take(1):
    return int(ids.shape[1])
  raise ValueError('The training split holds no examples')


def _teacher_forcing(image_input, ids, use_image: bool):
  """(image input, ids [L]) -> ({image input, ids[:-1]}, ids[1:])."""
  inputs = {model_lib.INPUT_IDS_INPUT: ids[:-1]}
  if use_image:
    inputs[model_lib.IMAGE_FEATURES_INPUT] = image_input
  return inputs, ids[1:]


def _pairs(per_image: tf.data.Dataset) -> tf.data.Dataset:
  """(image input, ids [captions, L]) per image -> one element per caption."""
  return per_image.flat_map(lambda image_input, ids: tf.data.Dataset.from_tensor_slices(ids).map(
      lambda caption: (image_input, caption)))


def _decoded_image_dataset(per_image, image_size) -> tf.data.Dataset:
  """(image bytes, ids) -> (pixels float32 [s, s, 3], ids), decoded as the serving graph does."""
  return per_image.map(
      lambda image, ids: (image_features.decode_images(image[tf.newaxis], image_size)[0], ids),
      num_parallel_calls=tf.data.AUTOTUNE)


def _bottleneck_dataset(per_image, feature_extractor, image_size) -> tf.data.Dataset:
  """Runs the frozen backbone once per image; every epoch reuses the features.

  `predict` runs the backbone on the strategy's devices; the features (float32
  [images, feature_dim]) are held in memory: 6,000 Flickr8k images of VGG16's
  pooled 512-d output take 12 MB, its flattened 224 px output 600 MB.
  """
  images = _decoded_image_dataset(per_image, image_size).map(lambda pixels, ids: pixels)
  computed = feature_extractor.predict(images.batch(_FEATURE_BATCH_SIZE), verbose=0)
  ids = [ids.numpy() for _, ids in per_image]
  ids = tf.RaggedTensor.from_row_lengths(np.concatenate(ids), [len(i) for i in ids])
  return tf.data.Dataset.from_tensor_slices((computed, ids))  # ([feature_dim], [captions, L])


def _pixel_blind_extractor(image_size: int):
  """The language model's stand-in backbone: float32 [b, 0], no pixels read.

  The baseline's decoder only needs the batch size, so its serving graph
  still decodes (and so validates) the images but skips the CNN.
  """
  pixels = keras.Input([image_size, image_size, 3])
  return keras.Model(pixels, keras.layers.Lambda(lambda x: tf.zeros([tf.shape(x)[0], 0]))(pixels))


def _training_model(caption_model, feature_extractor, image_size, augment: bool):
  """The model Keras fits: on cached features, or on pixels with augmentation."""
  if not augment:
    return caption_model
  # Augmentation only here, on training pixels: the model sees new variants each epoch
  # (in Transform it would run once). The pixel input takes the image-features key so
  # that one dataset layout (`_teacher_forcing`) feeds both training models.
  images = keras.Input([image_size, image_size, 3], name=model_lib.IMAGE_FEATURES_INPUT)
  input_ids = keras.Input([None], dtype=tf.int64, name=model_lib.INPUT_IDS_INPUT)
  pixels = augmentation.build_augmentation()(images)
  logits = caption_model({model_lib.IMAGE_FEATURES_INPUT: feature_extractor(pixels, training=False),
                          model_lib.INPUT_IDS_INPUT: input_ids})
  return keras.Model({model_lib.IMAGE_FEATURES_INPUT: images, model_lib.INPUT_IDS_INPUT: input_ids},
                     logits)


def _batched(pairs: tf.data.Dataset, batch_size: int, shuffle: bool,
             use_image: bool) -> tf.data.Dataset:
  if shuffle:
    pairs = pairs.shuffle(_SHUFFLE_BUFFER, reshuffle_each_iteration=True)
  return (pairs.map(lambda image_input, ids: _teacher_forcing(image_input, ids, use_image))
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def _vocabulary(tf_transform_output) -> List[str]:
  """Words in id order: the special tokens, then the learned vocabulary."""
  learned = tf_transform_output.vocabulary_by_name(features.VOCABULARY_NAME)
  return list(features.SPECIAL_TOKENS) + [w.decode('utf-8') for w in learned]


def run_fn(fn_args: FnArgs) -> None:
  """TFX Trainer entry point: trains, then exports the caption SavedModel."""
  config = config_lib.from_custom_config(config_lib.TrainerConfig, fn_args.custom_config)
  callbacks_lib.make_deterministic(config.seed)
  if config.mixed_precision and tf.config.list_physical_devices('GPU'):
    keras.mixed_precision.set_global_policy('mixed_float16')
  strategy = tf.distribute.MirroredStrategy()
  logging.info('Training on %d replica(s) with %s', strategy.num_replicas_in_sync, config)

  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  vocabulary = _vocabulary(tf_transform_output)
  train_images = _images_and_captions(fn_args.train_files, tf_transform_output)
  eval_images = _images_and_captions(fn_args.eval_files, tf_transform_output)
  sequence_length = _sequence_length(train_images)
  image_size = config.image_size or image_features.get_backbone(config.backbone).default_image_size

  with strategy.scope():
    feature_extractor = (image_features.build_feature_extractor(
        config.backbone, image_size=image_size, weights=config.backbone_weights,
        pooling=config.pooling) if config.use_image else _pixel_blind_extractor(image_size))
    caption_model = model_lib.build_caption_model(
        vocab_size=len(vocabulary), feature_dim=feature_extractor.output_shape[-1],
        sequence_length=sequence_length, embedding_dim=config.embedding_dim,
        lstm_units=config.lstm_units, num_layers=config.num_layers, dropout=config.dropout,
        use_image=config.use_image)
    training_model = _training_model(caption_model, feature_extractor, image_size, config.augment)
    training_model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                           loss=model_lib.summed_caption_loss)

  if not config.use_image:
    # The language model never looks at the pixels: skip the backbone entirely.
    train_per_image = train_images
    eval_per_image = eval_images
  elif config.augment:
    train_per_image = _decoded_image_dataset(train_images, image_size)
    eval_per_image = _decoded_image_dataset(eval_images, image_size)
  else:
    train_per_image = _bottleneck_dataset(train_images, feature_extractor, image_size)
    eval_per_image = _bottleneck_dataset(eval_images, feature_extractor, image_size)

  training_run = callbacks_lib.TrainingRun(fn_args)
  history = training_model.fit(
      _batched(_pairs(train_per_image), config.batch_size, shuffle=True, use_image=config.use_image),
      validation_data=_batched(_pairs(eval_per_image), config.batch_size, shuffle=False,
                               use_image=config.use_image),
      epochs=config.epochs,
      callbacks=[
          keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir),
          keras.callbacks.EarlyStopping(monitor='val_loss', patience=config.early_stopping_patience,
                                        min_delta=config.early_stopping_min_delta,
                                        restore_best_weights=True),
      ] + training_run.callbacks(),
      verbose=2)

  exporter.export_serving_model(
      fn_args.serving_model_dir, feature_extractor, model_lib.CaptionDecoder(caption_model),
      vocabulary, max_length=sequence_length - 1,
      beam_width=config.beam_width)
  _write_report(fn_args.model_run_dir, {
      'vocabulary_size': len(vocabulary),
      'sequence_length': sequence_length,
      'config': config_lib.to_custom_config(config),
      'resumed_from_epoch': training_run.resumed_from_epoch,
      'history': {k: [float(v) for v in vs] for k, vs in history.history.items()},
  })


def _write_report(model_run_dir: str, report: Dict) -> None:
  with tf.io.gfile.GFile(os.path.join(model_run_dir, names.TRAINING_REPORT_FILE), 'w') as f:
    json.dump(report, f, indent=2)
  logging.info('Vocabulary %d words, sequence length %d, best val_loss %.3f',
               report['vocabulary_size'], report['sequence_length'],
               min(report['history'].get('val_loss', [float('nan')])))
