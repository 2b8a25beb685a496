"""Where val_loss stops improving at Flickr8k's shape, for the captioner and the captions-only baseline.

The data is the real-scale stand-in's text (testing/synthetic_captions.py:
five captions of Flickr8k's lengths and word statistics per image, 6,000 train
and 1,000 eval images, words seen fewer than the Transform's
min_word_frequency times as <unk>), and VGG16 fc2-sized features (4,096-d,
non-negative) that carry the image's first word, as a photo carries what its
captions open with. Each candidate trains as the Trainer trains (its models,
input pipeline, learning-rate schedule and early stopping: trainer.callbacks)
from one seed, and the bench records val_loss (nats per caption) after every
epoch, the epoch early stopping kept, and seconds per epoch.

`*_30_patience_3` train on a 30-epoch budget with patience 3, until val_loss
has stopped improving for three epochs: the reference, training to
convergence; `*_default` train as TrainerConfig() and its baseline do. A candidate loses no
quality if its kept val_loss is no worse than its reference's.

Prints one JSON line: per candidate, its settings, the val_loss of every
epoch, the kept epoch and val_loss, its difference from its reference's,
and the median seconds per epoch and its training time's ratio to the
reference's.

Usage: bash run.sh bench epoch_budget [--candidates captioner_30_patience_3,...]
"""
import argparse
import collections
import dataclasses
import json
import multiprocessing
import tempfile
import types

import numpy as np

from bench import decoder_speed
from components import config as config_lib
from components import names
from components.training import callbacks as callbacks_lib
from components.training import datasets
from components.training import model as model_lib
from components.training import trainer
from pipeline import settings
from testing import synthetic_captions

TRAIN_IMAGES, EVAL_IMAGES = 6000, 1000
_CAPTIONER = config_lib.TrainerConfig()
_BASELINE = settings.baseline_config(_CAPTIONER, config_lib.EncoderConfig())
# name -> the TrainerConfig it trains.
CANDIDATES = {
    'captioner_30_patience_3': dataclasses.replace(_CAPTIONER, epochs=30, early_stopping_patience=3),
    'baseline_30_patience_3': dataclasses.replace(_BASELINE, epochs=30, early_stopping_patience=3),
    'captioner_default': _CAPTIONER,
    'baseline_default': _BASELINE,
}
REFERENCE = {True: 'captioner_30_patience_3', False: 'baseline_30_patience_3'}  # by use_image


def flickr8k_shaped(min_word_frequency: int, seed: int = 0):
  """(train, eval) per-image datasets of (features float32 [4096], ids [5, L]), the vocabulary size, L."""
  captions = synthetic_captions.flickr8k_captions(TRAIN_IMAGES + EVAL_IMAGES, seed)
  counts = collections.Counter(w for image in captions[:TRAIN_IMAGES] for c in image for w in c.split())
  words = sorted(w for w, n in counts.items() if n >= min_word_frequency)
  ids = {w: i for i, w in enumerate(words, len(names.SPECIAL_TOKENS))}
  rows = [[ids.get(w, names.UNKNOWN_ID) for w in c.split()] for image in captions for c in image]
  sequence_length = int(np.percentile([len(r) + 2 for r in rows[:TRAIN_IMAGES * 5]], 95))
  padded = decoder_speed.padded(rows, sequence_length)
  rng = np.random.default_rng(seed)
  vectors = np.maximum(rng.standard_normal((len(captions), decoder_speed.FEATURE_DIM)), 0).astype(np.float32)
  first = padded[::synthetic_captions.CAPTIONS_PER_IMAGE, 1]
  vectors[np.arange(len(captions)), first % decoder_speed.FEATURE_DIM] += 4.0
  split = TRAIN_IMAGES * synthetic_captions.CAPTIONS_PER_IMAGE
  return (decoder_speed.per_image(vectors[:TRAIN_IMAGES], padded[:split]),
          decoder_speed.per_image(vectors[TRAIN_IMAGES:], padded[split:]),
          len(words) + len(names.SPECIAL_TOKENS), sequence_length)


def train(config: config_lib.TrainerConfig, train_set, eval_set, vocabulary: int, sequence_length: int):
  """Fits `config` as run_fn does; (val_loss per epoch, seconds per epoch)."""
  callbacks_lib.make_deterministic(config.seed)
  extractor = (decoder_speed._identity_extractor() if config.use_image
               else model_lib.pixel_blind_extractor(config.image_size))
  _, training_model = model_lib.build_models(config, vocabulary, sequence_length, extractor)
  if not config.use_image:
    train_set, eval_set = (datasets.without_image(d.map(lambda vector, ids: ('', vector, ids)))
                           for d in (train_set, eval_set))
  with tempfile.TemporaryDirectory() as run_dir:
    fn_args = types.SimpleNamespace(model_run_dir=run_dir)
    epoch_line = callbacks_lib.EpochLine(f'{"captioner" if config.use_image else "baseline"}')
    history = training_model.fit(
        datasets.training_batches(train_set, config.batch_size, shuffle=True, use_image=config.use_image,
                                  captions=TRAIN_IMAGES * synthetic_captions.CAPTIONS_PER_IMAGE),
        validation_data=datasets.training_batches(eval_set, config.batch_size, shuffle=False,
                                                  use_image=config.use_image,
                                                  captions=EVAL_IMAGES * synthetic_captions.CAPTIONS_PER_IMAGE),
        epochs=config.epochs, callbacks=trainer.callbacks(fn_args, config) + [epoch_line], verbose=0)
  return [float(v) for v in history.history['val_loss']], epoch_line.seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--candidates', default=','.join(CANDIDATES),
                      help='comma-separated subset of: ' + ', '.join(CANDIDATES))
  args = parser.parse_args()
  train_set, eval_set, vocabulary, sequence_length = flickr8k_shaped(
      config_lib.TransformConfig().min_word_frequency)
  figures = {}
  for name in args.candidates.split(','):
    config = CANDIDATES[name]
    val_losses, seconds = train(config, train_set, eval_set, vocabulary, sequence_length)
    kept = int(np.argmin(val_losses))
    figures[name] = {'use_image': config.use_image, 'epochs': config.epochs,
                     'patience': config.early_stopping_patience, 'schedule': config.learning_rate_schedule,
                     'val_loss': [round(v, 4) for v in val_losses], 'epochs_run': len(val_losses),
                     'kept_epoch': kept + 1, 'kept_val_loss': round(val_losses[kept], 4),
                     'seconds_per_epoch': round(float(np.median(seconds)), 1)}
  for name, figure in figures.items():
    reference = figures.get(REFERENCE[figure['use_image']])
    if reference:
      figure['kept_val_loss_minus_reference'] = round(figure['kept_val_loss'] - reference['kept_val_loss'], 4)
      figure['seconds_ratio_to_reference'] = round(
          figure['epochs_run'] * figure['seconds_per_epoch']
          / (reference['epochs_run'] * reference['seconds_per_epoch']), 3)
  print(json.dumps({'train_images': TRAIN_IMAGES, 'eval_images': EVAL_IMAGES, 'vocabulary': vocabulary,
                    'sequence_length': sequence_length, 'cores': multiprocessing.cpu_count(),
                    'candidates': figures}))


if __name__ == '__main__':
  main()
