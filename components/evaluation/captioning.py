"""Captioning a split with a SavedModel's serving signature, as TF Serving would.

The one implementation of: read the images of an Examples split, call a
caption signature on image bytes or on tf.Examples, decode its outputs, and
score the captions against the references. The CaptionEvaluator, the
DemoGallery, the benches and the tests go through it; the
signature's inputs and outputs are built and read by
components/caption_signatures.py, which the serving client shares, so they all
agree on the serving contract (components/names.py) by construction.

With an ImageFeatureGen artifact whose encoder the model embeds (its
names.SERVING_ENCODER_FILE equals the artifact's), `caption_split` captions
from the cached features through the model's from_features signature, so the
backbone does not run at all. What makes that equal to serving_default on the
bytes: the ImageFeatureGen checked, once per artifact, that the serving
graph's encoder reproduces its cached features exactly
(components/encoder/parity.py); here the model's own encoder weights are compared
with the artifact's by fingerprint (`FeaturesCaptioner.check_encoder`, no image
encoded); and both signatures run the exporter's one decoder function.
"""
import os
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
from tfx.types import artifact
from tfx.utils import path_utils

from components import names
from components.caption_signatures import Captions
from components.caption_signatures import DEFAULT_BATCH_SIZE
from components.caption_signatures import decode_outputs
from components.caption_signatures import signature_inputs
from components import progress
from components import records
from components.encoder import features_artifact
from components.encoder import parity
from components.evaluation import caption_metrics


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


class SavedModelCaptioner:
  """Calls a SavedModel's caption signature in-process, as TF Serving would."""

  def __init__(self, model_dir: str, signature_name: str = names.CAPTION_SIGNATURE):
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


class FeaturesCaptioner:
  """Calls a SavedModel's from_features signature on cached backbone features."""

  def __init__(self, model_dir: str):
    self.model_dir = model_dir
    self._loaded = tf.saved_model.load(model_dir)
    if names.FEATURES_SIGNATURE not in self._loaded.signatures:
      raise ValueError(f'SavedModel {model_dir} has no signature {names.FEATURES_SIGNATURE!r} '
                       f'(it has {sorted(self._loaded.signatures)}).')
    self._signature = self._loaded.signatures[names.FEATURES_SIGNATURE]

  def check_encoder(self, image_features_uri: str) -> None:
    """Raises parity.ParityError unless the model's encoder weights are
    those that computed the artifact's features (compared by fingerprint: no
    image is encoded)."""
    expected = features_artifact.artifact_encoder_info(image_features_uri).weights_fingerprint
    variables = getattr(self._loaded, 'encoder_variables', None)
    actual = None if variables is None else features_artifact.weights_fingerprint(variables)
    if actual != expected:
      raise parity.ParityError(
          f'{self.model_dir} says it embeds the encoder of {image_features_uri}, but its encoder '
          f'weights (fingerprint {actual}) are not the ones that computed those features '
          f'({expected}).')

  def __call__(self, vectors: Sequence[np.ndarray]) -> Captions:
    """Captions a batch of feature vectors (float32 [feature_dim] each)."""
    outputs = self._signature(**{names.IMAGE_FEATURES_KEY: tf.constant(np.stack(vectors), tf.float32)})
    return decode_outputs({k: v.numpy() for k, v in outputs.items()}, len(vectors),
                          f'Signature {names.FEATURES_SIGNATURE!r} of {self.model_dir}')


def embeds_encoder_of(model_dir: str, image_features_uri: str) -> bool:
  """True when the SavedModel was trained on (and embeds the backbone of) these cached features."""
  path = os.path.join(model_dir, names.SERVING_ENCODER_FILE)
  return (tf.io.gfile.exists(path) and
          features_artifact.read_encoder_info(path) == features_artifact.artifact_encoder_info(image_features_uri))


class SplitCaptions(NamedTuple):
  """A model's captions for every image of a split."""
  captions: Dict[str, str]  # image id -> generated caption
  log_probabilities: Dict[str, float]  # image id -> log p(caption | image)
  references: Dict[str, List[str]]  # image id -> reference captions
  # image id -> the beam search's k best captions, best first (Captions.top_captions)
  top_captions: Dict[str, List[str]]
  # image id -> float32 [max_length, grid_h, grid_w], where an attention model looked
  # for each word of its caption (Captions.attention); empty for a model without it.
  attention: Dict[str, np.ndarray]
  # Images sent through the serving signature as bytes (so through the backbone,
  # when the model has one): the whole split, or none with cached features.
  serving_images: int = 0


def _cached_vectors(cached: Mapping[str, np.ndarray], batch: Sequence[records.ImageExample], split: str,
                    image_features_uri: str) -> List[np.ndarray]:
  missing = [example.image_id for example in batch if example.image_id not in cached]
  if missing:
    raise ValueError(f'Images {missing} of split {split!r} have no features in {image_features_uri}.')
  return [cached[example.image_id] for example in batch]


def caption_split(model_dir: str, examples: artifact.Artifact, split: str,
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  image_features_uri: Optional[str] = None) -> SplitCaptions:
  """Captions every image of `split` with the SavedModel in `model_dir`, in batches.

  From the cached features of `image_features_uri` when the model embeds their
  encoder (checked by `FeaturesCaptioner.check_encoder`), otherwise from the
  image bytes through serving_default.

  Raises:
    ValueError: if an image id occurs twice in the split, or has no cached feature.
    parity.ParityError: if the model claims the artifact's encoder but
      its encoder weights differ.
  """
  cached = None
  if image_features_uri is not None and embeds_encoder_of(model_dir, image_features_uri):
    captioner = FeaturesCaptioner(model_dir)
    captioner.check_encoder(image_features_uri)
    cached = features_artifact.read_features(image_features_uri, split)
    logging.info('Captioning split %r from the cached features in %s.', split, image_features_uri)
  else:
    captioner = SavedModelCaptioner(model_dir)
  result = SplitCaptions({}, {}, {}, {}, {})
  serving_images = 0
  images = progress.track(records.iter_split_examples(examples, split), records.split_size(examples, split),
                          f'captioning {split}')
  for batch in batched(images, batch_size):
    if cached is None:
      answer = captioner([example.image for example in batch])
      serving_images += len(batch)
    else:
      answer = captioner(_cached_vectors(cached, batch, split, image_features_uri))
    attention = answer.attention if answer.attention is not None else [None] * len(batch)
    for example, caption, log_probability, top, looked in zip(
        batch, answer.captions, answer.log_probabilities, answer.top_captions, attention):
      if example.image_id in result.captions:
        raise ValueError(f'Image id {example.image_id!r} occurs twice in split {split!r} '
                         f'of {examples.uri}.')
      result.captions[example.image_id] = caption
      result.log_probabilities[example.image_id] = log_probability
      result.references[example.image_id] = example.references
      result.top_captions[example.image_id] = list(top)
      if looked is not None:
        result.attention[example.image_id] = looked
  logging.info('Captioned %d images of split %r with %s (%d through serving_default).',
               len(result.captions), split, model_dir, serving_images)
  return result._replace(serving_images=serving_images)


class ScoredSplit(NamedTuple):
  """A model's captions of a split and their scores (caption_metrics.score_captions)."""
  split_captions: SplitCaptions
  scores: Dict


def caption_and_score(model_dir: str, examples: artifact.Artifact, split: str,
                      batch_size: int = DEFAULT_BATCH_SIZE,
                      image_features_uri: Optional[str] = None) -> ScoredSplit:
  """Captions `split` with the model (see `caption_split`) and scores the captions."""
  split_captions = caption_split(model_dir, examples, split, batch_size, image_features_uri)
  return ScoredSplit(split_captions,
                     caption_metrics.score_captions(split_captions.captions, split_captions.references))
