"""The ExampleGen's record layout: one tf.Example per image, written and read here only.

  names.IMAGE_ID_KEY  bytes [1]             image file name (the id)
  names.IMAGE_KEY     bytes [1]             the image file, byte for byte
  names.CAPTIONS_KEY  bytes [num_captions]  its captions, UTF-8

The ExampleGen writes it, the `from_examples` serving signature parses it (by
IMAGE_KEY alone), and the feature pass, the evaluator, the gallery, the client
and the tests read or build it through the functions below.
"""
import os
from typing import Iterator, List, NamedTuple, Sequence

import tensorflow as tf
from tfx.types import artifact
from tfx.types import artifact_utils

from components import names


class ImageExample(NamedTuple):
  """One image of an Examples split."""
  image_id: str
  image: bytes  # the encoded image file (JPEG/PNG/GIF/BMP)
  references: List[str]  # the annotators' captions


def _bytes_feature(values: Sequence[bytes]) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def image_example(image: bytes, image_id: str = None, captions: Sequence[str] = ()) -> tf.train.Example:
  """A tf.Example in the ExampleGen's layout; id and captions are optional
  (the serving signature reads only the image)."""
  feature = {names.IMAGE_KEY: _bytes_feature([image])}
  if image_id is not None:
    feature[names.IMAGE_ID_KEY] = _bytes_feature([image_id.encode('utf-8')])
  if captions:
    feature[names.CAPTIONS_KEY] = _bytes_feature([c.encode('utf-8') for c in captions])
  return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_image_example(serialized: bytes, where: str = 'record') -> ImageExample:
  """Reads a serialized ExampleGen record; ValueError naming `where` if a feature is missing."""
  feature = tf.train.Example.FromString(serialized).features.feature
  for key in (names.IMAGE_ID_KEY, names.IMAGE_KEY, names.CAPTIONS_KEY):
    if not feature[key].bytes_list.value:
      raise ValueError(f'{where} has no {key!r} bytes feature.')
  return ImageExample(
      image_id=feature[names.IMAGE_ID_KEY].bytes_list.value[0].decode('utf-8'),
      image=feature[names.IMAGE_KEY].bytes_list.value[0],
      references=[c.decode('utf-8') for c in feature[names.CAPTIONS_KEY].bytes_list.value])


def split_files(examples: artifact.Artifact, split: str) -> List[str]:
  """The gzipped TFRecord files of one split of an Examples artifact, sorted.

  Raises:
    FileNotFoundError: if the split directory holds no *.gz file.
  """
  [split_uri] = artifact_utils.get_split_uris([examples], split)
  paths = sorted(tf.io.gfile.glob(os.path.join(split_uri, '*.gz')))
  if not paths:
    raise FileNotFoundError(f'No *.gz TFRecord file in {split_uri} (split {split!r}).')
  return paths


def split_size(examples: artifact.Artifact, split: str) -> int:
  """Records in a split: a quick pass over its files, so a progress bar knows how long is left."""
  return sum(int(tf.data.TFRecordDataset(path, compression_type='GZIP').reduce(0, lambda n, _: n + 1))
             for path in split_files(examples, split))


def iter_split_examples(examples: artifact.Artifact, split: str) -> Iterator[ImageExample]:
  """Yields the images of one split of an Examples artifact, file by file (bounded memory).

  Raises:
    FileNotFoundError: if the split directory holds no *.gz file.
    ValueError: if a record lacks a feature (naming the file and record).
  """
  for path in split_files(examples, split):
    dataset = tf.data.TFRecordDataset(path, compression_type='GZIP')
    for index, record in enumerate(dataset.as_numpy_iterator()):
      yield parse_image_example(record, where=f'{path}: record {index}')
