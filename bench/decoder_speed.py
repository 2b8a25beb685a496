"""The decoder's training speed at Flickr8k scale, and its loss, for candidate settings.

Flickr8k's training split is 6,000 images with 5 captions each: 30,000
(image, caption) pairs per epoch, VGG16 fc2 features (4,096-d), a vocabulary of
a few thousand words and an LSTM of 512 units. This bench builds data of that
shape (random non-negative features; captions of Flickr8k's lengths, about 11
words, each the previous word shifted by a Zipf-distributed step, so that the
words cover the vocabulary nearly evenly (every id is a softmax target; for
Flickr8k's own Zipf-like word counts see testing/synthetic_captions.py), and a
first word that depends on the image, so there is something to learn), feeds it
through the Trainer's own input pipeline (datasets.training_batches on what
datasets.with_cached_features returns) and the Trainer's own models
(model.build_models), and times the Keras train step of each candidate
TrainerConfig against today's default in the same run.

The candidates take turns: each runs the training steps of `--chunk_pairs`
pairs, then the next, for `--rounds` rounds, so load that comes and goes on a
shared host hits all of them; the first round (tracing) is not timed. Every
candidate sees the same pairs in the same order from the same initial weights
(one seed), so after training each is scored on the same held-out pairs: the
`val_loss` (nats per caption, the Trainer's loss) says whether a faster setting
learns as well per pair seen. A larger batch makes fewer updates per pair, so
its loss after a fixed number of pairs shows what it costs.

Prints one JSON line: per candidate, seconds per 30,000-pair epoch (median step
time times steps per epoch), its ratio to the `default` candidate's (the baseline:
batch 64, float32, tf_keras' LSTM in its while loop), and its val_loss; and how
long the input pipeline alone takes for an epoch. `recipe_default` is what
TrainerConfig() trains with now.

Usage: python -m bench.decoder_speed [--vocabulary 5000] [--rounds 6] [--chunk_pairs 1280]
"""
import argparse
import dataclasses
import json
import multiprocessing

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components import config as config_lib
from components.training import callbacks
from components.training import datasets
from components.training import model as model_lib
from testing import synthetic_captions
from testing import timing

FEATURE_DIM = 4096  # VGG16 fc2
CAPTIONS_PER_IMAGE = synthetic_captions.CAPTIONS_PER_IMAGE

# Overrides of TODAY, the baseline decoder (batch 64, Adam at
# 1e-3, float32, tf_keras' LSTM in its while loop); 'recipe_default' is TrainerConfig()'s choice.
TODAY = dict(batch_size=64, learning_rate=1e-3, decoder_precision='float32', fused_training=False,
             jit_compile=False)
_DEFAULT = config_lib.TrainerConfig()
_DEFAULT_SPEED = dict(decoder_precision=_DEFAULT.decoder_precision, fused_training=_DEFAULT.fused_training,
                      jit_compile=_DEFAULT.jit_compile)
CANDIDATES = {
    'default': {},
    'batch_32': dict(batch_size=32),
    'batch_128': dict(batch_size=128),
    'decoder_bfloat16': dict(decoder_precision='bfloat16'),
    'fused_training': dict(fused_training=True),
    'jit_compile': dict(jit_compile=True),
    'recipe_default': dict(batch_size=_DEFAULT.batch_size, learning_rate=_DEFAULT.learning_rate,
                           **_DEFAULT_SPEED),
    # The default at the published recipe's batch and rate (32, 5e-4), and at
    # twice the default's batch with twice its rate (the linear scaling rule).
    'recipe_batch_32': dict(batch_size=32, learning_rate=_DEFAULT.learning_rate / 2, **_DEFAULT_SPEED),
    'recipe_batch_128': dict(batch_size=128, learning_rate=_DEFAULT.learning_rate * 2, **_DEFAULT_SPEED),
}


def synthetic_split(rng: np.random.Generator, images: int, vocabulary: int):
  """(features float32 [images, 4096], caption ids ragged [images, 5, L]) shaped like Flickr8k.

  Words are ids 4.. (after the special tokens); a word's successor is the
  word shifted by a Zipf-distributed step (so the words themselves come out
  nearly uniform), and the first word follows the image's strongest feature,
  so a decoder can learn both.
  """
  features = np.maximum(rng.standard_normal((images, FEATURE_DIM)), 0).astype(np.float32)
  first_words = 4 + np.argmax(features[:, :64], axis=1)
  return features, synthetic_captions.caption_ids(
      rng, first_words, synthetic_captions.zipf(vocabulary - 4),
      lambda previous, step: 4 + (previous * 7 + step) % (vocabulary - 4))


def padded(rows, sequence_length: int) -> np.ndarray:
  """[START, words..., END, PAD...] truncated to `sequence_length`, keeping END, as the Transform does."""
  ids = np.zeros((len(rows), sequence_length), np.int64)
  for i, words in enumerate(rows):
    words = words[:sequence_length - 2]
    ids[i, :len(words) + 2] = [1] + words + [2]
  return ids


def per_image(features: np.ndarray, ids: np.ndarray) -> tf.data.Dataset:
  """What datasets.with_cached_features yields: (features [4096], ids [5, L]) per image."""
  return tf.data.Dataset.from_tensor_slices(
      (features, tf.RaggedTensor.from_uniform_row_length(ids, CAPTIONS_PER_IMAGE)))


def _identity_extractor() -> keras.Model:
  """Stands in for the backbone: build_models reads only its output width."""
  cached = keras.Input([FEATURE_DIM])
  return keras.Model(cached, cached)


def _input_pipeline_seconds(train: tf.data.Dataset, batch_size: int) -> float:
  """One epoch of the Trainer's input pipeline alone (no model)."""
  batches = datasets.training_batches(train, batch_size, shuffle=True, use_image=True,
                                      captions=datasets.caption_count(train))
  with timing.Stopwatch() as watch:
    for _ in batches:
      pass
  return watch.seconds


def _seconds_per_step(runs, rounds: int, chunk_pairs: int):
  """Each candidate's seconds per step, taking turns (see above); the first round is not timed."""
  seconds_per_step = {name: [] for name in runs}
  for round_index in range(rounds):
    for name, (config, _, batches, train_step) in runs.items():
      steps = chunk_pairs // config.batch_size
      with timing.Stopwatch() as watch:
        for _ in range(steps):
          logs = train_step(batches)
        float(logs['loss'])  # waits for the last step
      if round_index:
        seconds_per_step[name].append(watch.seconds / steps)
  return seconds_per_step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--train_images', type=int, default=6000)
  parser.add_argument('--vocabulary', type=int, default=5000, help='ids, special tokens included')
  parser.add_argument('--lstm_units', type=int, default=512)
  parser.add_argument('--rounds', type=int, default=6, help='rounds of turns; the first is warm-up')
  parser.add_argument('--chunk_pairs', type=int, default=1280, help='pairs per turn (a multiple of 128)')
  parser.add_argument('--candidates', default=','.join(CANDIDATES),
                      help='comma-separated subset of: ' + ', '.join(CANDIDATES))
  args = parser.parse_args()
  names = args.candidates.split(',')
  if names[0] != 'default':
    names.insert(0, 'default')

  rng = np.random.default_rng(0)
  train_features, train_rows = synthetic_split(rng, args.train_images, args.vocabulary)
  val_features, val_rows = synthetic_split(rng, 200, args.vocabulary)
  sequence_length = int(np.percentile([len(r) + 2 for r in train_rows], 95))
  train = per_image(train_features, padded(train_rows, sequence_length))
  val = per_image(val_features, padded(val_rows, sequence_length))
  pairs_per_epoch = args.train_images * CAPTIONS_PER_IMAGE

  base = dataclasses.replace(config_lib.TrainerConfig(), lstm_units=args.lstm_units, **TODAY)
  runs = {}
  for name in names:
    config = dataclasses.replace(base, **CANDIDATES[name])
    callbacks.make_deterministic(config.seed)  # the same initial weights and pair order for all
    _, training_model = model_lib.build_models(config, args.vocabulary, sequence_length,
                                               _identity_extractor())
    batches = datasets.training_batches(train, config.batch_size, shuffle=True, use_image=True,
                                        captions=pairs_per_epoch)
    runs[name] = (config, training_model, iter(batches.repeat()), training_model.make_train_function())

  seconds_per_step = _seconds_per_step(runs, args.rounds, args.chunk_pairs)
  figures = {}
  default_epoch = None
  for name, (config, training_model, _, _) in runs.items():
    epoch = float(np.median(seconds_per_step[name])) * -(-pairs_per_epoch // config.batch_size)
    default_epoch = default_epoch or epoch
    val_loss = training_model.evaluate(
        datasets.training_batches(val, 64, shuffle=False, use_image=True,
                                  captions=datasets.caption_count(val)), verbose=0)
    figures[name] = {'seconds_per_epoch': round(epoch, 1),
                     'ratio_to_default': timing.ratio(epoch, default_epoch),
                     'val_loss': round(float(val_loss), 3)}
  print(json.dumps({
      'train_pairs_per_epoch': pairs_per_epoch,
      'vocabulary': args.vocabulary,
      'sequence_length': sequence_length,
      'feature_dim': FEATURE_DIM,
      'lstm_units': args.lstm_units,
      'pairs_trained_per_candidate': args.rounds * args.chunk_pairs,
      'cores': multiprocessing.cpu_count(),
      'input_pipeline_seconds_per_epoch_batch_64': round(_input_pipeline_seconds(train, 64), 1),
      'candidates': figures,
  }))


if __name__ == '__main__':
  main()
