"""The captioner's training datasets, built from the Transform output and the cached features.

Input (Transform output, see components/training/transform.py), one example
per image: names.IMAGE_ID_KEY, names.IMAGE_KEY (encoded bytes) and the
captions as padded ids [captions, L]. Each (image, caption) pair is one
training example; the model reads ids[:-1] (START .. last word) and predicts
ids[1:] (first word .. END).

What stands for the image is chosen per Trainer:
  * `with_cached_features`: the ImageFeatureGen's vector for the image id (the
    default: the frozen backbone never runs in the Trainer), held in memory;
  * `with_streamed_features`: the same, streamed from the artifact's files in
    their stored dtype (the grids of pooling 'grid', too large to hold);
  * `with_pixels`: the decoded pixels, for augmentation and the backbone on the
    fly (`--augment`);
  * `without_image`: nothing (an empty vector), the captions held in memory
    (the captions-only baseline).
`run_fn` (components/training/trainer.py) and bench/training.py build their
datasets with these functions.
"""
from typing import List, Mapping

import numpy as np
import tensorflow as tf

from components import names
from components.encoder import features_artifact
from components.encoder import image_features
from components.training import model as model_lib

# Shuffle buffer in (image, caption) pairs: a few epochs' worth of Flickr8k batches.
SHUFFLE_BUFFER = 10000


def tfrecord_files(patterns: List[str]) -> List[str]:
  files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
  if not files:
    raise FileNotFoundError(f'No transformed examples match {patterns}')
  return files


def images_and_captions(patterns: List[str], tf_transform_output) -> tf.data.Dataset:
  """Per image: (image id string [], image bytes string [], caption ids int64 [captions, L])."""
  feature_spec = tf_transform_output.transformed_feature_spec()

  def parse(serialized):
    parsed = tf.io.parse_single_example(serialized, feature_spec)
    ids = tf.sparse.to_dense(parsed[names.CAPTION_IDS_KEY])
    ids = tf.reshape(ids, [-1, parsed[names.SEQUENCE_LENGTH_KEY]])
    return (tf.reshape(parsed[names.IMAGE_ID_KEY], []), tf.reshape(parsed[names.IMAGE_KEY], []),
            ids)

  return (tf.data.TFRecordDataset(tfrecord_files(patterns), compression_type='GZIP')
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE))


def vocabulary(tf_transform_output) -> List[str]:
  """Words in id order: the special tokens, then the learned vocabulary."""
  learned = tf_transform_output.vocabulary_by_name(names.VOCABULARY_NAME)
  return list(names.SPECIAL_TOKENS) + [w.decode('utf-8') for w in learned]


def sequence_length(per_image: tf.data.Dataset) -> int:
  for _, _, ids in per_image.take(1):
    return int(ids.shape[1])
  raise ValueError('The training split holds no examples')


def with_cached_features(per_image: tf.data.Dataset, vectors: Mapping[str, np.ndarray],
                         source: str) -> tf.data.Dataset:
  """(id, bytes, ids) -> (features float32 [feature_dim], ids), joined on the image id.

  Holds the split's features in memory: 6,000 Flickr8k images of VGG16's
  4,096-d fc2 take 98 MB.

  The feature pass reconciles its output with the ExampleGen's examples, and
  the Transform reads the same examples, so the two sides must hold the same
  images: this join is where a Transform that lost or repeated records shows.

  Raises:
    ValueError: naming `source` and the ids, if an image has no features, if
      featurised images have no example here, or if an image comes twice.
  """
  ids_per_image = [(image_id.decode('utf-8'), ids)
                   for image_id, _, ids in per_image.as_numpy_iterator()]
  _check_join([image_id for image_id, _ in ids_per_image], list(vectors), source)
  matrix = np.stack([vectors[image_id] for image_id, _ in ids_per_image]).astype(np.float32)
  ids = tf.RaggedTensor.from_row_lengths(np.concatenate([ids for _, ids in ids_per_image]),
                                         [len(ids) for _, ids in ids_per_image])
  return tf.data.Dataset.from_tensor_slices((matrix, ids))


def with_streamed_features(per_image: tf.data.Dataset, features_uri: str, split: str) -> tf.data.Dataset:
  """(id, bytes, ids) -> (features [feature_dim] in the artifact's feature_dtype, ids), the
  features read from the artifact's files as the batches need them.

  with_cached_features holds a split's float32 matrix: 6,000 Flickr8k images of VGG16's
  14x14x512 grid take 2.4 GB, COCO's 113,000 train images 45 GB. Here only the captions
  and the image ids are held; each image's features stream from its record, in the
  dtype it is stored in (training_batches casts a batch to float32). The accounting is
  with_cached_features', on the ids alone.

  Raises:
    ValueError: as with_cached_features.
  """
  source = f'split {split!r} of {features_uri}'
  ids_per_image = [(image_id.decode('utf-8'), ids) for image_id, _, ids in per_image.as_numpy_iterator()]
  paths = features_artifact.feature_files(features_uri, split)
  _check_join([image_id for image_id, _ in ids_per_image], features_artifact.image_ids(paths), source)
  image_ids = [image_id for image_id, _ in ids_per_image]
  captions = tf.RaggedTensor.from_row_lengths(np.concatenate([ids for _, ids in ids_per_image]),
                                              [len(ids) for _, ids in ids_per_image])
  row_of = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(image_ids), tf.range(len(image_ids), dtype=tf.int64)),
      default_value=-1)
  info = features_artifact.artifact_encoder_info(features_uri)
  dtype = tf.dtypes.as_dtype(info.feature_dtype)
  spec = {names.IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
          names.IMAGE_FEATURES_KEY: (tf.io.FixedLenFeature([info.feature_dim], tf.float32) if dtype == tf.float32
                                        else tf.io.FixedLenFeature([], tf.string))}

  def parse(record):
    parsed = tf.io.parse_single_example(record, spec)
    vector = parsed[names.IMAGE_FEATURES_KEY]
    if dtype != tf.float32:
      vector = tf.ensure_shape(tf.io.decode_raw(vector, dtype, little_endian=True), [info.feature_dim])
    return vector, captions[row_of.lookup(parsed[names.IMAGE_ID_KEY])]

  return tf.data.TFRecordDataset(paths, compression_type='GZIP').map(parse)


def _check_join(example_ids: List[str], feature_ids: List[str], source: str) -> None:
  """Every example has features, every featurised image an example, and each once (ValueError otherwise)."""
  featurised = set(feature_ids)
  missing = [image_id for image_id in example_ids if image_id not in featurised]
  if missing:
    raise ValueError(f'{len(missing)} images have no features in {source}, e.g. {missing[:5]}.')
  seen = set(example_ids)
  unused = sorted(featurised - seen)
  if unused:
    raise ValueError(f'{len(unused)} images of {source} have features but no transformed example, '
                     f'e.g. {unused[:5]}: the examples lost them after the feature pass.')
  if len(seen) != len(example_ids):
    raise ValueError(f'{len(example_ids) - len(seen)} transformed examples repeat an image of '
                     f'{source}.')
  if len(featurised) != len(feature_ids):
    raise ValueError(f'{len(feature_ids) - len(featurised)} feature records repeat an image of {source}.')


def with_pixels(per_image: tf.data.Dataset, image_size: int) -> tf.data.Dataset:
  """(id, bytes, ids) -> (pixels float32 [s, s, 3], ids), decoded as the serving graph does."""
  return per_image.map(
      lambda _, image, ids: (image_features.decode_images(image[tf.newaxis], image_size)[0], ids),
      num_parallel_calls=tf.data.AUTOTUNE)


def without_image(per_image: tf.data.Dataset) -> tf.data.Dataset:
  """(id, bytes, ids) -> (float32 [0], ids), read once and held in memory.

  The baseline's decoder never reads the image; reading the examples again
  every epoch (the image bytes with them, gzipped) made its epochs slower
  than the captioner's, which holds its features and ids in memory.
  """
  rows = list(per_image.map(lambda _, image, ids: ids).as_numpy_iterator())
  ids = tf.RaggedTensor.from_row_lengths(np.concatenate(rows), [len(r) for r in rows])
  return tf.data.Dataset.from_tensor_slices((tf.zeros([len(rows), 0]), ids))


def _teacher_forcing(image_input, ids, use_image: bool):
  """(image input, ids [L]) -> ({image input, ids[:-1]}, ids[1:])."""
  inputs = {model_lib.INPUT_IDS_INPUT: ids[:-1]}
  if use_image:
    inputs[names.IMAGE_FEATURES_KEY] = image_input
  return inputs, ids[1:]


def caption_count(per_image: tf.data.Dataset) -> int:
  """The captions of a per-image dataset whose elements end with ids [captions, L]: one pass over it.

  Count on images_and_captions' output, before any image is decoded.
  """
  return int(per_image.reduce(np.int64(0),
                              lambda n, element: n + tf.shape(element[-1], out_type=tf.int64)[0]))


def training_batches(per_image: tf.data.Dataset, batch_size: int, shuffle: bool,
                     use_image: bool, captions: int) -> tf.data.Dataset:
  """(image input, ids [captions, L]) per image -> batches of teacher-forcing pairs, one per caption.

  `captions` (caption_count) gives the number of batches, asserted, so Keras
  knows an epoch's steps from the first epoch on (the progress lines' total
  and time left, components/training/callbacks.py).
  """
  steps = -(-captions // batch_size)
  pairs = per_image.flat_map(lambda image_input, ids: tf.data.Dataset.from_tensor_slices(ids).map(
      lambda caption: (image_input, caption)))
  if shuffle:
    pairs = pairs.shuffle(SHUFFLE_BUFFER, reshuffle_each_iteration=True)
  batches = (pairs.map(lambda image_input, ids: _teacher_forcing(image_input, ids, use_image))
             .batch(batch_size).apply(tf.data.experimental.assert_cardinality(steps)))
  if use_image and per_image.element_spec[0].dtype == tf.bfloat16:  # with_streamed_features' grids
    batches = batches.map(lambda inputs, targets: (
        {**inputs, names.IMAGE_FEATURES_KEY: tf.cast(inputs[names.IMAGE_FEATURES_KEY], tf.float32)},
        targets))
  return batches.prefetch(tf.data.AUTOTUNE)
