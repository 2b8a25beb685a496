"""Training speed of the feature cache, and caption latency against the bare backbone.

Builds real Transform output for a generated shapes dataset (testing.transformed_data:
the ExampleGen and the stock TFX Transform executors), then, in one run and on
the same data:

(a) Training time per epoch, cached features against features computed on the
    fly. Two captioners of the same configuration are built as
    components/trainer.run_fn builds them, from its own helpers, so the
    trainer's real input pipelines and models are timed:
      * cached: the frozen backbone runs once per image (`_bottleneck_dataset`,
        timed on its own as the one-time cost); every epoch fits the decoder
        on the cached feature vectors;
      * on the fly: the `augment=True` path; every step runs augmentation and
        the backbone on the pixels of each (image, caption) pair.
    They fit one epoch at a time, alternately, so that load which comes and
    goes on a shared host hits both; the first round (tracing, shuffle-buffer
    and thread-pool start-up) is left out, the median of the others is
    reported. Validation is left out: only the training step differs.

(b) Caption latency at batch 1: run_fn trains (cached path) and exports the
    captioner, and its serving_default signature is called on one encoded
    image at a time, alternating call by call with the bare backbone's forward
    pass (the feature extractor of the same configuration, as a tf.function)
    on the same images, already decoded and resized. Beam search stops when no
    live beam can win any more, so the latency depends on the trained model:
    the mean caption length is reported with it.

Prints one JSON line; a ratio on_the_fly/cached above 1 is what the cache
saves per epoch, break_even_epochs the epochs after which it has paid for its
one-time feature pass.

Usage: .venv/bin/python -m bench.training [--num_images 200] [--image_size 64]
       [--epochs 3] [--requests 100]
"""
import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

from testing import timing
from testing import transformed_data
from components import names
from components import features
from components.evaluation import captioning
from components.encoder import image_features
from components.training import model as model_lib, trainer
from components import config as config_lib

class _EpochTimer(keras.callbacks.Callback):
  """Seconds of every epoch fitted, from its first batch's start to its last batch's end."""

  def __init__(self):
    super().__init__()
    self.seconds = []
    self._start = None

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self._start)


def _time_epochs(config: config_lib.TrainerConfig, data: transformed_data.TransformedData):
  """Part (a). Returns (figures dict, feature extractor, image size)."""
  tf_transform_output = tft.TFTransformOutput(data.transform_graph_uri)
  vocabulary = trainer._vocabulary(tf_transform_output)
  train_images = trainer._images_and_captions(data.transformed_files(features.TRAIN_SPLIT),
                                              tf_transform_output)
  sequence_length = trainer._sequence_length(train_images)
  captions_per_image = [int(ids.shape[0]) for _, ids in train_images]
  image_size = config.image_size

  strategy = tf.distribute.MirroredStrategy()
  with strategy.scope():
    feature_extractor = image_features.build_feature_extractor(
        config.backbone, image_size=image_size, weights=config.backbone_weights, pooling=config.pooling)
    models = {}
    for name, augment in (('cached', False), ('on_the_fly', True)):
      caption_model = model_lib.build_caption_model(
          vocab_size=len(vocabulary), feature_dim=feature_extractor.output_shape[-1],
          sequence_length=sequence_length, embedding_dim=config.embedding_dim,
          lstm_units=config.lstm_units, num_layers=config.num_layers, dropout=config.dropout)
      models[name] = trainer._training_model(caption_model, feature_extractor, image_size, augment)
      models[name].compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                           loss=model_lib.summed_caption_loss)

  with timing.Stopwatch() as feature_cache:
    cached_per_image = trainer._bottleneck_dataset(train_images, feature_extractor, image_size)
  feature_cache_seconds = feature_cache.seconds
  datasets = {
      'cached': cached_per_image,
      'on_the_fly': trainer._decoded_image_dataset(train_images, image_size),
  }
  datasets = {name: trainer._batched(trainer._pairs(per_image), config.batch_size, shuffle=True,
                                     use_image=True)
              for name, per_image in datasets.items()}
  timers = {name: _EpochTimer() for name in models}
  for epoch in range(config.epochs):
    for name, training_model in models.items():
      training_model.fit(datasets[name], initial_epoch=epoch, epochs=epoch + 1,
                         callbacks=[timers[name]], verbose=0)

  per_epoch = {name: float(np.median(timer.seconds[1:])) for name, timer in timers.items()}
  saved_per_epoch = per_epoch['on_the_fly'] - per_epoch['cached']
  pairs = sum(captions_per_image)
  figures = {
      'train_images': len(captions_per_image),
      'train_pairs_per_epoch': pairs,
      'batch_size': config.batch_size,
      'steps_per_epoch': -(-pairs // config.batch_size),
      'epochs': config.epochs,
      'timed_epochs': config.epochs - 1,
      'feature_dim': int(feature_extractor.output_shape[-1]),
      'feature_cache_seconds': round(feature_cache_seconds, 3),
      'cached_seconds_per_epoch': round(per_epoch['cached'], 3),
      'on_the_fly_seconds_per_epoch': round(per_epoch['on_the_fly'], 3),
      'ratio_on_the_fly_to_cached_per_epoch': timing.ratio(per_epoch['on_the_fly'], per_epoch['cached'], 2),
      'break_even_epochs': (round(feature_cache_seconds / saved_per_epoch, 2)
                            if saved_per_epoch > 0 else None),
  }
  return figures, feature_extractor, image_size


def _time_latency(config, data, work_dir, feature_extractor, image_size, requests):
  """Part (b): trains and exports with run_fn, then times the signature against the backbone."""
  args = transformed_data.fn_args(data, work_dir, config)
  with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines; stdout holds the JSON only
    trainer.run_fn(args)
  captioner = captioning.SavedModelCaptioner(args.serving_model_dir)
  images = data.images(features.EVAL_SPLIT) + data.images(features.DEMO_SPLIT)
  pixels = [image_features.decode_images(tf.constant([image]), image_size) for image in images]
  backbone = tf.function(lambda batch: feature_extractor(batch, training=False),
                         input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])

  def forward(batch):
    return backbone(batch).numpy()

  seconds = timing.alternating_seconds(
      {'caption': lambda image: captioner([image]), 'backbone': forward},
      {'caption': [images[i % len(images)] for i in range(requests)],
       'backbone': [pixels[i % len(pixels)] for i in range(requests)]})
  captions = captioner(images).captions
  with open(os.path.join(args.model_run_dir, names.TRAINING_REPORT_FILE)) as f:
    sequence_length = json.load(f)['sequence_length']
  p50 = {name: timing.percentile_ms(s, 50) for name, s in seconds.items()}
  p99 = {name: timing.percentile_ms(s, 99) for name, s in seconds.items()}
  return {
      'latency_images': len(images),
      'requests_batch_1': requests,
      'beam_width': config.beam_width,
      'max_caption_ids': sequence_length - 1,
      'mean_caption_words': round(float(np.mean([len(c.split()) for c in captions])), 2),
      'caption_batch_1_p50_ms': round(p50['caption'], 2),
      'caption_batch_1_p99_ms': round(p99['caption'], 2),
      'backbone_batch_1_p50_ms': round(p50['backbone'], 2),
      'backbone_batch_1_p99_ms': round(p99['backbone'], 2),
      'ratio_caption_to_backbone_p50': timing.ratio(p50['caption'], p50['backbone'], 2),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_images', type=int, default=200,
                      help='Generated images, split 6:1:1 (default %(default)s).')
  parser.add_argument('--image_size', type=int, default=64,
                      help='Image and model input side (default %(default)s).')
  parser.add_argument('--epochs', type=int, default=3,
                      help='Epochs per path; the first is not timed (default %(default)s).')
  parser.add_argument('--requests', type=int, default=100,
                      help='Batch-1 calls of each of caption and backbone (default %(default)s).')
  args = parser.parse_args()
  if args.epochs < 2:
    parser.error('--epochs must be at least 2: the first epoch is warm-up')
  # The local runner's settings for the embedded dataset (random VGG16, 256-unit LSTM).
  config = dataclasses.replace(config_lib.EMBEDDED_TRAINER, image_size=args.image_size,
                               epochs=args.epochs)

  with tempfile.TemporaryDirectory(prefix='training_bench_') as tmp:
    data = transformed_data.build_transformed_data(os.path.join(tmp, 'data'), args.num_images, args.image_size)
    training, feature_extractor, image_size = _time_epochs(config, data)
    latency = _time_latency(config, data, os.path.join(tmp, 'trainer'), feature_extractor, image_size,
                            args.requests)
  print(json.dumps({
      'num_images': args.num_images,
      'image_size': image_size,
      'backbone': config.backbone,
      'pooling': config.pooling,
      'lstm_units': config.lstm_units,
      'cores': multiprocessing.cpu_count(),
      **training,
      **latency,
  }))


if __name__ == '__main__':
  main()
