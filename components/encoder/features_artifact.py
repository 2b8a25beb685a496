"""The ImageFeatures artifact's format: written and read here only.

Layout of an ImageFeatures artifact (components.artifacts.ImageFeatures, the
ImageFeatureGen's output, components/encoder/feature_gen.py):
  <uri>/names.BACKBONE_DIR/   the frozen feature extractor as a tf_keras
      SavedModel, weights included (random ones too), so that the Trainer
      exports exactly the network that produced the features. Its
      serving_default signature is what the feature pass runs:
        names.IMAGES_INPUT        string [None]  encoded image bytes
        -> names.IMAGE_FEATURES_KEY float32 [None, feature_dim]
      (decode and resize as the serving graph does, then the backbone).
  <uri>/names.ENCODER_FILE    JSON `EncoderInfo`: backbone, weights,
      weights_fingerprint, image_size, pooling, feature_dim, precision,
      feature_dtype, grid_shape.
  <uri>/Split-<split>/names.FEATURES_FILE_PREFIX-*.gz  per split of the
      examples, gzipped TFRecords of tf.Example, one per image:
        names.IMAGE_ID_KEY        bytes [1]
        names.IMAGE_FEATURES_KEY  float [feature_dim] when feature_dtype is
            'float32'; otherwise bytes [1], the feature_dim values in
            feature_dtype (little-endian), which hold the backbone's output
            exactly (pooling 'grid' rounds to config_lib.GRID_FEATURE_DTYPE)
  Custom properties: the EncoderInfo fields (`weights` absent for random
  weights: ML Metadata holds no None), `split_names`,
  names.BACKBONE_PASSES_PROPERTY (images run through the backbone, from Beam's
  RunInference counter), FEATURE_PASS_SECONDS_PROPERTY and
  PARITY_PASSES_PROPERTY (images re-encoded by the parity check,
  components/encoder/parity.py).

The EncoderInfo is the one record of the encoder downstream: the Trainer
loads the backbone and copies the info into the serving model
(names.SERVING_ENCODER_FILE); the exporter takes the image size from the
loaded backbone; the evaluator and the gallery compare the model's copy and
its encoder weights' fingerprint with the artifact's. None of them reads the
encoder from a config.
"""
import collections
import dataclasses
import hashlib
import json
import os
from typing import Collection, Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tfx.types import artifact

from components import config as config_lib
from components import names
from components.encoder import image_features as image_features_lib

# Custom properties of the artifact besides the EncoderInfo fields.
FEATURE_PASS_SECONDS_PROPERTY = 'feature_pass_seconds'  # wall time of the Beam pass, start-up included
PARITY_PASSES_PROPERTY = 'parity_backbone_passes'  # images re-encoded by the parity check
SPLIT_NAMES_PROPERTY = 'split_names'
# Records per tf.data batch when only the ids of a split are read.
_ID_BATCH = 1024
# Ids named in a MissingFeaturesError, per split.
_IDS_SHOWN = 20


class MissingFeaturesError(RuntimeError):
  """The feature files of a split do not hold exactly the images the pass read."""


@dataclasses.dataclass(frozen=True)
class EncoderInfo:
  """What produced the features; a SavedModel trained on them carries a copy."""
  backbone: str  # a key of config_lib.BACKBONE_IMAGE_SIZES
  weights: Optional[str]  # 'imagenet', a weights file path, or None (random)
  weights_fingerprint: str  # sha256 of the backbone's weight values, in layer order
  image_size: int  # square input side in pixels
  pooling: str  # one of config_lib.POOLINGS
  feature_dim: int
  # 'float32' or 'bfloat16' (resolved, components/encoder/precision.py): the
  # backbone's arithmetic. Artifacts from before the setting computed in float32.
  precision: str = config_lib.RESOLVED_PRECISIONS[0]
  # The dtype the records store the features in ('float32', or
  # config_lib.GRID_FEATURE_DTYPE for pooling 'grid').
  feature_dtype: str = 'float32'
  # [grid_h, grid_w, channels] of pooling 'grid' (feature_dim is their
  # product, in row-major order); None for the poolings that keep no grid.
  grid_shape: Optional[List[int]] = None


def weights_fingerprint(variables: Sequence[tf.Variable]) -> str:
  """sha256 over weight values in order (a Keras model's `weights`, or the
  `encoder_variables` an exported SavedModel keeps in the same order): equal
  only for the same network and weights."""
  digest = hashlib.sha256()
  for weight in variables:
    digest.update(weight.numpy().tobytes())
  return digest.hexdigest()


def encoder_info(extractor: keras.Model, encoder: config_lib.EncoderConfig) -> EncoderInfo:
  """The EncoderInfo of a feature extractor built from `encoder` (precision resolved)."""
  is_grid = encoder.pooling == config_lib.GRID_POOLING
  return EncoderInfo(
      backbone=encoder.backbone, weights=encoder.backbone_weights,
      weights_fingerprint=weights_fingerprint(extractor.weights),
      image_size=int(extractor.input_shape[1]), pooling=encoder.pooling,
      feature_dim=int(extractor.output_shape[-1]), precision=encoder.precision,
      feature_dtype=config_lib.GRID_FEATURE_DTYPE if is_grid else 'float32',
      grid_shape=image_features_lib.grid_shape(extractor) if is_grid else None)


def read_encoder_info(path: str) -> EncoderInfo:
  """Reads an names.ENCODER_FILE (from an ImageFeatures artifact or a serving SavedModel)."""
  with tf.io.gfile.GFile(path) as f:
    return EncoderInfo(**json.load(f))


def artifact_encoder_info(uri: str) -> EncoderInfo:
  """The EncoderInfo of the ImageFeatures artifact at `uri`."""
  return read_encoder_info(os.path.join(uri, names.ENCODER_FILE))


def write_encoder_info(info: EncoderInfo, path: str) -> None:
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(dataclasses.asdict(info), f, indent=2)


def set_encoder_properties(image_features: artifact.Artifact, info: EncoderInfo) -> None:
  """The EncoderInfo fields as custom properties of the artifact (None ones left out)."""
  for field, value in dataclasses.asdict(info).items():
    if isinstance(value, list):
      image_features.set_string_custom_property(field, json.dumps(value))
    elif isinstance(value, int):
      image_features.set_int_custom_property(field, value)
    elif value is not None:
      image_features.set_string_custom_property(field, value)


def backbone_dir(uri: str) -> str:
  return os.path.join(uri, names.BACKBONE_DIR)


def save_backbone(feature_extractor: keras.Model, export_dir: str) -> None:
  """Saves the feature extractor with its image-bytes signature (see the module docstring)."""

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=names.IMAGES_INPUT)])
  def encode(images):
    return {names.IMAGE_FEATURES_KEY: image_features_lib.encode_images(feature_extractor, images)}

  feature_extractor.save(export_dir, save_format='tf', include_optimizer=False,
                         signatures={names.CAPTION_SIGNATURE: encode})


def load_backbone(uri: str) -> keras.Model:
  """The artifact's frozen feature extractor as a Keras model (pixels 0..255 -> features)."""
  model = keras.models.load_model(backbone_dir(uri), compile=False)
  model.trainable = False
  return model


def backbone_passes(image_features: artifact.Artifact) -> int:
  """Images the feature pass ran through the backbone (its Beam counter, kept in MLMD)."""
  return image_features.get_int_custom_property(names.BACKBONE_PASSES_PROPERTY)


def feature_example(image_id: str, vector: np.ndarray, feature_dtype: str = 'float32') -> bytes:
  """One serialized record of a features split (layout in the module docstring).

  Raises:
    ValueError: if `vector` does not fit `feature_dtype` exactly (the store must lose nothing).
  """
  vector = np.asarray(vector, np.float32)
  if feature_dtype == 'float32':
    value = tf.train.Feature(float_list=tf.train.FloatList(value=vector))
  else:
    stored = vector.astype(tf.dtypes.as_dtype(feature_dtype).as_numpy_dtype)
    if not np.array_equal(stored.astype(np.float32), vector):
      raise ValueError(f'The features of image {image_id!r} are not exact in {feature_dtype}: the '
                       'backbone must round them to it (image_features.RoundTo).')
    value = tf.train.Feature(bytes_list=tf.train.BytesList(value=[stored.astype(stored.dtype.newbyteorder('<'))
                                                                  .tobytes()]))
  return tf.train.Example(features=tf.train.Features(feature={
      names.IMAGE_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_id.encode('utf-8')])),
      names.IMAGE_FEATURES_KEY: value,
  })).SerializeToString()


def _stored_values(feature_dtype: str):
  """(the records' IMAGE_FEATURES_KEY parse spec, parsed value -> float32 [feature_dim]) for `feature_dtype`."""
  if feature_dtype == 'float32':
    return tf.io.VarLenFeature(tf.float32), lambda parsed: parsed.values.numpy()
  stored = np.dtype(tf.dtypes.as_dtype(feature_dtype).as_numpy_dtype).newbyteorder('<')
  return (tf.io.FixedLenFeature([], tf.string),
          lambda parsed: np.frombuffer(parsed.numpy(), stored).astype(np.float32))


def split_dir(uri: str, split: str) -> str:
  return os.path.join(uri, f'Split-{split}')


def split_file_prefix(uri: str, split: str) -> str:
  """The prefix the feature pass writes a split's files under (`-<shard>.gz` follows)."""
  return os.path.join(split_dir(uri, split), names.FEATURES_FILE_PREFIX)


def feature_files(uri: str, split: str) -> List[str]:
  """The gzipped TFRecord files of one split of an ImageFeatures artifact, sorted."""
  return sorted(tf.io.gfile.glob(os.path.join(split_dir(uri, split), '*.gz')))


def read_features(uri: str, split: str, image_ids: Optional[Collection[str]] = None,
                  feature_dtype: Optional[str] = None) -> Dict[str, np.ndarray]:
  """image id -> float32 [feature_dim] for every image of `split` in an ImageFeatures
  artifact, or for those of `image_ids` only. `feature_dtype`: the records' (None: the
  artifact's EncoderInfo's).

  Raises:
    FileNotFoundError: if the split has no feature file.
    ValueError: if an image id occurs twice among the records read (every
      record without `image_ids`), naming the file.
  """
  paths = feature_files(uri, split)
  if not paths:
    raise FileNotFoundError(f'No feature file in {split_dir(uri, split)} (split {split!r}).')
  value_spec, to_vector = _stored_values(feature_dtype or artifact_encoder_info(uri).feature_dtype)
  spec = {names.IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string), names.IMAGE_FEATURES_KEY: value_spec}
  vectors = {}
  for path in paths:
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP').as_numpy_iterator():
      parsed = tf.io.parse_single_example(record, spec)
      image_id = parsed[names.IMAGE_ID_KEY].numpy().decode('utf-8')
      if image_id in vectors:
        raise ValueError(f'Image id {image_id!r} occurs twice in the features of {path}.')
      if image_ids is None or image_id in image_ids:
        vectors[image_id] = to_vector(parsed[names.IMAGE_FEATURES_KEY])
        if image_ids is not None and len(vectors) == len(image_ids):
          return vectors  # all found: the rest of a large split need not be parsed
  return vectors


def image_ids(paths: Sequence[str]) -> List[str]:
  """The names.IMAGE_ID_KEY of every record in gzipped TFRecord files of
  tf.Example (examples or features), in file order.

  Parses that feature alone, in C++ batches, so that a split of large images
  is read at disk speed.
  """
  if not paths:
    return []
  spec = {names.IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string)}
  dataset = tf.data.TFRecordDataset(list(paths), compression_type='GZIP').batch(_ID_BATCH).map(
      lambda batch: tf.io.parse_example(batch, spec)[names.IMAGE_ID_KEY])
  return [image_id.decode('utf-8') for batch in dataset.as_numpy_iterator() for image_id in batch]


def reconcile(uri: str, read: Mapping[str, Sequence[str]]) -> Dict[str, int]:
  """Checks that each split's feature files hold every image id read, once, and no other.

  Args:
    uri: the ImageFeatures artifact.
    read: split -> the image ids the pass read from its examples.

  Returns:
    split -> images with features.

  Raises:
    MissingFeaturesError: naming every split that differs, how many ids are
      missing, duplicated or unexpected, and the first _IDS_SHOWN of each.
  """
  problems, counts = [], {}
  for split, read_ids in read.items():
    written = collections.Counter(image_ids(feature_files(uri, split)))
    missing = sorted(set(read_ids) - set(written))
    twice = sorted(image_id for image_id, count in written.items() if count > 1)
    unexpected = sorted(set(written) - set(read_ids))
    counts[split] = len(written)
    for what, ids in (('missing', missing), ('written more than once', twice),
                      ('not among the examples', unexpected)):
      if ids:
        problems.append(f'split {split!r}: {len(ids)} of {len(read_ids)} images {what}: '
                        f'{ids[:_IDS_SHOWN]}{" ..." if len(ids) > _IDS_SHOWN else ""}')
  if problems:
    raise MissingFeaturesError(f'The feature pass did not write one feature vector per image '
                               f'read, in {uri}: ' + '; '.join(problems))
  return counts
