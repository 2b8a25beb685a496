"""Examples artifacts laid out as the ExampleGen writes them, for code that starts after ingestion.

A split is a mapping image id -> (encoded image bytes, reference captions);
`write_examples` turns splits into an Examples artifact:

  <uri>/Split-<split>/data_tfrecord-00000-of-00001.gz   gzipped TFRecords, one
      `components.records.image_example` per image, in the mapping's order

with `split_names` set, which is what the evaluator, the gallery and the
captioning library read.
"""
import os
from typing import Dict, List, Mapping, Sequence, Tuple

from PIL import Image
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components import records
from testing import images

Split = Mapping[str, Tuple[bytes, Sequence[str]]]  # image id -> (image bytes, captions)
_SHARD = 'data_tfrecord-00000-of-00001.gz'
_COLOURS = {'red': (220, 30, 30), 'green': (30, 180, 60), 'blue': (40, 60, 220), 'yellow': (240, 220, 40)}
_SHAPES = ('square', 'circle', 'triangle')


def captioned_images(num_images: int = 12, image_size: int = 24) -> Dict[str, Tuple[bytes, List[str]]]:
  """A split of `num_images` distinct PNGs, ids 'img_000.png', ..., each with 5 reference captions.

  Image i is a solid colour of (image_size + i) x (image_size * 3/4) pixels
  (i-th of red, green, blue, yellow) named with the i-th of square, circle,
  triangle; every caption names both, so a fixed caption cannot match them all.
  """
  split = {}
  for index in range(num_images):
    colour = list(_COLOURS)[index % len(_COLOURS)]
    shape = _SHAPES[index % len(_SHAPES)]
    # One pixel set apart from the colour makes every image's bytes distinct.
    pixels = Image.new('RGB', (image_size + index, image_size * 3 // 4), _COLOURS[colour])
    pixels.putpixel((index, 0), (index, index, index))
    split[f'img_{index:03d}.png'] = (images.encode(pixels), [
        f'a {colour} {shape} on a white background',
        f'one {colour} {shape}',
        f'there is a {colour} {shape} in the picture',
        f'a {shape} coloured {colour}',
        f'a single {colour} {shape} is shown',
    ])
  return split


def write_examples(uri: str, splits: Mapping[str, Split]) -> standard_artifacts.Examples:
  """Writes `splits` (split name -> Split) as an Examples artifact at `uri`; returns it."""
  examples = standard_artifacts.Examples()
  examples.uri = str(uri)
  examples.split_names = artifact_utils.encode_split_names(list(splits))
  for split, dataset in splits.items():
    split_dir = os.path.join(examples.uri, f'Split-{split}')
    os.makedirs(split_dir)
    with tf.io.TFRecordWriter(os.path.join(split_dir, _SHARD), options='GZIP') as writer:
      for image_id, (image, captions) in dataset.items():
        writer.write(records.image_example(image, image_id, captions).SerializeToString())
  return examples
