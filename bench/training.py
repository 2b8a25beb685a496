"""Training speed of the feature cache, and caption latency against the bare backbone.

Builds real Transform output for a generated shapes dataset (testing.transformed_data:
the ExampleGen and the stock TFX Transform executors), then, in one run and on
the same data:

(a) Training time per epoch, cached features against features computed on the
    fly. Two captioners of the same configuration are built as
    components/training/trainer.run_fn builds them, with the same public
    functions (components/training/datasets.py, model.build_models), so the
    trainer's real input pipelines and models are timed:
      * cached: the ImageFeatureGen executor runs the frozen backbone once per
        image (timed on its own as the one-time cost, Beam start-up and the
        backbone SavedModel's export included); every epoch fits the decoder
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
from components.encoder import features_artifact
from components.evaluation import captioning
from components.encoder import image_features as image_features_lib
from components.training import datasets
from components.training import model as model_lib
from components.training import trainer
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


def _time_epochs(config: config_lib.TrainerConfig, encoder: config_lib.EncoderConfig,
                 data: transformed_data.TransformedData, work_dir: str):
  """Part (a). Returns (figures dict, ImageFeatures artifact)."""
  start = time.perf_counter()
  image_features = transformed_data.build_image_features(data.examples_uri, os.path.join(work_dir, 'features'),
                                                         encoder, config.seed)
  feature_cache_seconds = time.perf_counter() - start

  tf_transform_output = tft.TFTransformOutput(data.transform_graph_uri)
  vocabulary = datasets.vocabulary(tf_transform_output)
  train_images = datasets.images_and_captions(data.transformed_files(names.TRAIN_SPLIT),
                                              tf_transform_output)
  sequence_length = datasets.sequence_length(train_images)
  captions_per_image = [int(ids.shape[0]) for _, _, ids in train_images]
  pairs = sum(captions_per_image)

  strategy = tf.distribute.MirroredStrategy()
  with strategy.scope():
    feature_extractor = features_artifact.load_backbone(image_features.uri)
    models = {name: model_lib.build_models(dataclasses.replace(config, augment=augment), len(vocabulary),
                                           sequence_length, feature_extractor)[1]
              for name, augment in (('cached', False), ('on_the_fly', True))}

  per_image = {
      'cached': datasets.with_cached_features(
          train_images, features_artifact.read_features(image_features.uri, names.TRAIN_SPLIT),
          image_features.uri),
      'on_the_fly': datasets.with_pixels(train_images, feature_extractor.input_shape[1]),
  }
  batches = {name: datasets.training_batches(dataset, config.batch_size, shuffle=True, use_image=True,
                                             captions=pairs)
             for name, dataset in per_image.items()}
  timers = {name: _EpochTimer() for name in models}
  for epoch in range(config.epochs):
    for name, training_model in models.items():
      training_model.fit(batches[name], initial_epoch=epoch, epochs=epoch + 1,
                         callbacks=[timers[name]], verbose=0)

  per_epoch = {name: float(np.median(timer.seconds[1:])) for name, timer in timers.items()}
  saved_per_epoch = per_epoch['on_the_fly'] - per_epoch['cached']
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
  return figures, image_features


def _time_latency(config, data, work_dir, image_features, requests):
  """Part (b): trains and exports with run_fn, then times the signature against the backbone."""
  args = transformed_data.fn_args(data, work_dir, config, image_features.uri)
  with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines; stdout holds the JSON only
    trainer.run_fn(args)
  captioner = captioning.SavedModelCaptioner(args.serving_model_dir)
  images = data.images(names.EVAL_SPLIT) + data.images(names.DEMO_SPLIT)
  feature_extractor = features_artifact.load_backbone(image_features.uri)
  image_size = feature_extractor.input_shape[1]
  pixels = [image_features_lib.decode_images(tf.constant([image]), image_size) for image in images]
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
  config = dataclasses.replace(config_lib.EMBEDDED_TRAINER, epochs=args.epochs, image_size=args.image_size)
  encoder = dataclasses.replace(config_lib.EMBEDDED_ENCODER, image_size=args.image_size)

  with tempfile.TemporaryDirectory(prefix='training_bench_') as tmp:
    data = transformed_data.build_transformed_data(os.path.join(tmp, 'data'), args.num_images, args.image_size)
    training, image_features = _time_epochs(config, encoder, data, tmp)
    latency = _time_latency(config, data, os.path.join(tmp, 'trainer'), image_features, args.requests)
  print(json.dumps({
      'num_images': args.num_images,
      'image_size': args.image_size,
      'backbone': encoder.backbone,
      'pooling': encoder.pooling,
      'lstm_units': config.lstm_units,
      'cores': multiprocessing.cpu_count(),
      **training,
      **latency,
  }))


if __name__ == '__main__':
  main()
