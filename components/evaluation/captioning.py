"""Captioning a split with a SavedModel's serving signature, as TF Serving would.

The one implementation of: read the images of an Examples split, call a
caption signature on image bytes or on tf.Examples, decode its outputs, and
score the captions against the references. The CaptionEvaluator, the
DemoGallery, the run summary, the serving client, the benches and the tests
all go through it, so they agree on the serving contract
(components/features.py) by construction.
"""
import os
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
from tfx.types import artifact
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import features
from components import progress
from components import records
from components.evaluation import caption_metrics

# Which input each caption signature takes (the SavedModel contract).
INPUT_OF_SIGNATURE = {
    features.CAPTION_SIGNATURE: features.IMAGES_INPUT,
    features.EXAMPLES_SIGNATURE: features.EXAMPLES_INPUT,
}
DEFAULT_BATCH_SIZE = 32


def _split_files(examples: artifact.Artifact, split: str) -> List[str]:
  [split_uri] = artifact_utils.get_split_uris([examples], split)
  paths = sorted(tf.io.gfile.glob(os.path.join(split_uri, '*.gz')))
  if not paths:
    raise FileNotFoundError(f'No *.gz TFRecord file in {split_uri} (split {split!r}).')
  return paths


def _split_size(examples: artifact.Artifact, split: str) -> int:
  """Records in a split: a quick pass over its files, so the progress bar knows how long is left."""
  return sum(int(tf.data.TFRecordDataset(path, compression_type='GZIP').reduce(0, lambda n, _: n + 1))
             for path in _split_files(examples, split))


def iter_split_examples(examples: artifact.Artifact, split: str) -> Iterator[records.ImageExample]:
  """Yields the images of one split of an Examples artifact, file by file (bounded memory).

  Raises:
    FileNotFoundError: if the split directory holds no *.gz file.
    ValueError: if a record lacks a feature (naming the file and record).
  """
  for path in _split_files(examples, split):
    dataset = tf.data.TFRecordDataset(path, compression_type='GZIP')
    for index, record in enumerate(dataset.as_numpy_iterator()):
      yield records.parse_image_example(record, where=f'{path}: record {index}')


def batched(items: Iterable, batch_size: int) -> Iterator[list]:
  """Yields lists of `batch_size` consecutive items (the last one may be shorter)."""
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  batch = []
  for item in items:
    batch.append(item)
    if len(batch) == batch_size:
      yield batch
      batch = []
  if batch:
    yield batch


def serving_model_dir(model: artifact.Artifact) -> str:
  """The SavedModel directory of a Trainer's Model artifact (`<uri>/Format-Serving`)."""
  return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))


def signature_inputs(signature_name: str, images: Sequence[bytes]) -> Tuple[str, List[bytes]]:
  """(input name, values) that ask `signature_name` to caption `images`.

  The from_examples signature takes the images wrapped in the ExampleGen's
  tf.Example layout; serving_default takes the bytes as they are.
  """
  if signature_name not in INPUT_OF_SIGNATURE:
    raise ValueError(f'Unknown caption signature {signature_name!r}; '
                     f'choose one of {sorted(INPUT_OF_SIGNATURE)}.')
  if signature_name == features.EXAMPLES_SIGNATURE:
    return features.EXAMPLES_INPUT, [records.image_example(image).SerializeToString() for image in images]
  return features.IMAGES_INPUT, list(images)


class Captions(NamedTuple):
  """A caption signature's answer for a batch, in request order."""
  captions: List[str]
  log_probabilities: List[float]


def decode_outputs(outputs: Mapping[str, np.ndarray], num_images: int, source: str) -> Captions:
  """Checks and decodes a caption signature's outputs (in-process or from TF Serving).

  Raises ValueError naming `source` if an output is missing or the batch size is wrong.
  """
  for key in (features.CAPTION_OUTPUT, features.LOG_PROBABILITY_OUTPUT):
    if key not in outputs:
      raise ValueError(f'{source} returned no output {key!r} (it has {sorted(outputs)}).')
  captions = [c.decode('utf-8', errors='replace') for c in np.asarray(outputs[features.CAPTION_OUTPUT]).tolist()]
  log_probabilities = [float(p) for p in np.asarray(outputs[features.LOG_PROBABILITY_OUTPUT])]
  if len(captions) != num_images or len(log_probabilities) != num_images:
    raise ValueError(f'{source} returned {len(captions)} captions and {len(log_probabilities)} '
                     f'log-probabilities for {num_images} images.')
  return Captions(captions, log_probabilities)


class SavedModelCaptioner:
  """Calls a SavedModel's caption signature in-process, as TF Serving would."""

  def __init__(self, model_dir: str, signature_name: str = features.CAPTION_SIGNATURE):
    if not tf.saved_model.contains_saved_model(model_dir):
      raise FileNotFoundError(f'No SavedModel in {model_dir}.')
    self.model_dir = model_dir
    self.signature_name = signature_name
    self._loaded = tf.saved_model.load(model_dir)  # keeps the signature's variables alive
    if signature_name not in self._loaded.signatures:
      raise ValueError(f'SavedModel {model_dir} has no signature {signature_name!r} '
                       f'(it has {sorted(self._loaded.signatures)}).')
    self._signature = self._loaded.signatures[signature_name]

  def __call__(self, images: Sequence[bytes]) -> Captions:
    """Captions a batch of encoded images."""
    input_name, values = signature_inputs(self.signature_name, images)
    outputs = self._signature(**{input_name: tf.constant(values, tf.string, shape=[len(values)])})
    return decode_outputs({k: v.numpy() for k, v in outputs.items()}, len(images),
                          f'Signature {self.signature_name!r} of {self.model_dir}')


class SplitCaptions(NamedTuple):
  """A model's captions for every image of a split."""
  captions: Dict[str, str]  # image id -> generated caption
  log_probabilities: Dict[str, float]  # image id -> log p(caption | image)
  references: Dict[str, List[str]]  # image id -> reference captions


def caption_split(model_dir: str, examples: artifact.Artifact, split: str,
                  batch_size: int = DEFAULT_BATCH_SIZE) -> SplitCaptions:
  """Captions every image of `split` with the SavedModel in `model_dir`, in batches.

  Raises:
    ValueError: if an image id occurs twice in the split.
  """
  captioner = SavedModelCaptioner(model_dir)
  result = SplitCaptions({}, {}, {})
  images = progress.track(iter_split_examples(examples, split), _split_size(examples, split),
                          f'captioning {split}')
  for batch in batched(images, batch_size):
    answer = captioner([example.image for example in batch])
    for example, caption, log_probability in zip(batch, answer.captions, answer.log_probabilities):
      if example.image_id in result.captions:
        raise ValueError(f'Image id {example.image_id!r} occurs twice in split {split!r} '
                         f'of {examples.uri}.')
      result.captions[example.image_id] = caption
      result.log_probabilities[example.image_id] = log_probability
      result.references[example.image_id] = example.references
  logging.info('Captioned %d images of split %r with %s.', len(result.captions), split, model_dir)
  return result


class ScoredSplit(NamedTuple):
  """A model's captions of a split and their scores (caption_metrics.score_captions)."""
  split_captions: SplitCaptions
  scores: Dict


def caption_and_score(model_dir: str, examples: artifact.Artifact, split: str,
                      batch_size: int = DEFAULT_BATCH_SIZE) -> ScoredSplit:
  """Captions `split` with the model and scores the captions against the split's references."""
  split_captions = caption_split(model_dir, examples, split, batch_size)
  return ScoredSplit(split_captions,
                     caption_metrics.score_captions(split_captions.captions, split_captions.references))
