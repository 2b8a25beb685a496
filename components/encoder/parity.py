"""The parity check: the serving graph's encoder reproduces the cached features exactly.

Checked once per ImageFeatures artifact (not once per model that uses it):
after the feature pass, the first `sample` images of every split are encoded
again from their bytes the way the exported serving graph encodes them (the
saved backbone loaded as the Trainer loads it, then
image_features.encode_images, the function the exporter puts in front of the
decoder, traced into a graph as the exporter traces it: in bfloat16
TensorFlow's eager kernels round otherwise than the graph's fused ones), in
one batch, and must equal the cached vectors exactly; otherwise ParityError
names the images. A model trained on the artifact embeds this backbone; the
evaluator and the gallery check that by comparing its encoder weights with
the artifact's `weights_fingerprint` (components/evaluation/captioning.py, no
image encoded), so a rerun that retrains only the decoder runs no backbone at
all.
"""
import itertools
import logging
from typing import Sequence

import numpy as np
import tensorflow as tf
from tfx.types import artifact

from components import records
from components.encoder import features_artifact
from components.encoder import image_features as image_features_lib

# Images per split re-encoded as the serving graph encodes them, compared with the cache.
DEFAULT_PARITY_SAMPLE = 32


class ParityError(ValueError):
  """Features of the same image bytes differ between the cache and the serving graph's encoder."""


def check_parity(uri: str, examples: artifact.Artifact, splits: Sequence[str], sample: int) -> int:
  """Re-encodes the first `sample` images of each split as the serving graph
  does and compares them with the cached vectors (see the module docstring).

  Returns:
    The number of images re-encoded (backbone passes of the check).

  Raises:
    ParityError: naming the split, the images that differ and the largest difference.
  """
  backbone = features_artifact.load_backbone(uri)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def encode(images):  # a graph, as in the exporter and the saved backbone's signature
    return image_features_lib.encode_images(backbone, images)

  passes = 0
  for split in splits:
    batch = list(itertools.islice(records.iter_split_examples(examples, split), sample))
    if batch:
      _check_split(uri, split, batch, encode(tf.constant([example.image for example in batch])).numpy())
      passes += len(batch)
  logging.info('Parity: the serving graph\'s encoder reproduces the cached features of %d images.',
               passes)
  return passes


def _check_split(uri: str, split: str, batch: Sequence[records.ImageExample], served: np.ndarray) -> None:
  """Raises ParityError unless `served` (one vector per example of `batch`) equals the cache."""
  ids = [example.image_id for example in batch]
  cached = features_artifact.read_features(uri, split, set(ids))
  missing = [image_id for image_id in ids if image_id not in cached]
  if missing:
    raise ParityError(f'Images {missing} of split {split!r} have no features in {uri}.')
  differing = [image_id for image_id, vector in zip(ids, served)
               if not np.array_equal(vector, cached[image_id])]
  if differing:
    largest = max(float(np.max(np.abs(vector - cached[image_id])))
                  for image_id, vector in zip(ids, served))
    raise ParityError(
        f'{uri}: the serving graph\'s encoder and the cached features disagree on '
        f'{len(differing)} of {len(ids)} images of split {split!r}: {differing} '
        f'(largest difference {largest:g}).')
