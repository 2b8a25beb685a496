"""Stand-ins for the feature pass's tests: a backbone handler without a model, and Examples at scale.

`FakeBackbone` is a RunInference handler that returns [len(image)] as each
image's feature vector, optionally after sleeping per batch (a slow backbone)
and optionally dropping given images (a handler that loses one), so a test can
drive `feature_gen.write_features` without TensorFlow models. It lives here,
not in a test file, because Beam's worker processes must import it.

`predict_rate` is the benchmarks' baseline for the pass: a bare
`model.predict` loop in one process.
"""
import os
import time
from typing import Collection, Iterable, Mapping, Sequence

from apache_beam.ml.inference import base as inference_base
import numpy as np
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components import records
from components.encoder import image_features
from components.evaluation import captioning


class FakeBackbone(inference_base.ModelHandler):
  """Encoded images -> PredictionResult(float32 [len(image)]); see the module docstring."""

  def __init__(self, batch_size: int = 32, seconds_per_batch: float = 0.0,
               drop: Collection[bytes] = ()):
    super().__init__()
    self._batch_size = batch_size
    self._seconds = seconds_per_batch
    self._drop = frozenset(drop)

  def load_model(self):
    return None

  def run_inference(self, batch: Sequence[bytes], model, inference_args=None
                    ) -> Iterable[inference_base.PredictionResult]:
    time.sleep(self._seconds)
    return [inference_base.PredictionResult(image, np.array([len(image)], np.float32))
            for image in batch if image not in self._drop]

  def batch_elements_kwargs(self):
    return {'min_batch_size': self._batch_size, 'max_batch_size': self._batch_size}


def write_repeated_examples(uri: str, split_sizes: Mapping[str, int], image: bytes,
                            files_per_split: int = 2) -> standard_artifacts.Examples:
  """An Examples artifact whose splits hold `split_sizes[split]` records of one
  image, ids '<split>_00000.jpg', ... in `files_per_split` files each, as the
  ExampleGen lays them out. Stored without compression inside the gzip
  framing, so that hundreds of MB are written in seconds."""
  examples = standard_artifacts.Examples()
  examples.uri = str(uri)
  examples.split_names = artifact_utils.encode_split_names(list(split_sizes))
  options = tf.io.TFRecordOptions(compression_type='GZIP', compression_level=0)
  for split, size in split_sizes.items():
    split_dir = os.path.join(examples.uri, f'Split-{split}')
    os.makedirs(split_dir)
    for part in range(files_per_split):
      path = os.path.join(split_dir, f'data_tfrecord-{part:05d}-of-{files_per_split:05d}.gz')
      with tf.io.TFRecordWriter(path, options) as writer:
        for index in range(part, size, files_per_split):
          writer.write(records.image_example(image, f'{split}_{index:05d}.jpg', ['a caption'])
                       .SerializeToString())
  return examples


def predict_rate(backbone, images: Sequence[bytes], batch_size: int) -> float:
  """images/s of a bare `backbone.predict` loop over `images` in this process,
  decoding and resizing included as in the feature pass (not timed: tracing)."""
  size = backbone.input_shape[1]
  decode = tf.function(lambda batch: image_features.decode_images(batch, size),
                       input_signature=[tf.TensorSpec([None], tf.string)])
  backbone.predict(decode(tf.constant(list(images[:batch_size]))), verbose=0)
  start = time.perf_counter()
  for batch in captioning.batched(images, batch_size):
    backbone.predict(decode(tf.constant(batch)), verbose=0)
  return len(images) / (time.perf_counter() - start)
