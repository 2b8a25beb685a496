"""Deterministic generator of the embedded default dataset ("shapes8k").

Real Flickr8k cannot be downloaded in every environment, so the project ships
this generator. It writes synthetic scenes whose correct captions follow from
the pixels, in the same folder layout as the real dataset, so the pipeline is
exercised exactly as it would be on Flickr8k.

Scenes, on a light grey background with a slight per-image tint and noise:
  * one object (a colour from COLOURS, a shape from SHAPES) at one of the
    coarse positions of POSITIONS (left, right, top, bottom or centre cell of a
    3x3 grid; corners are left out so the position stays recognisable from
    coarse, frozen convolutional features), or
  * two objects that differ in colour or shape, side by side (relation
    "left of" / "right of") or stacked ("above" / "below"); each object's side
    is 25-35% of the image side and the two never overlap.
Every image has five differently worded captions, all correct for its pixels.
Caption slot n always uses template n of its scene type, so the wording is
regular enough for a one-layer LSTM to learn from ~1,500 training images.

Layouts written (`layout=`):
  'official' (default, the Flickr8k distribution):
      <out>/Flicker8k_Dataset/<id>.jpg       JPEG, quality 95
      <out>/Flickr8k.token.txt                "<id>#<n>\\t<caption>", n = 0..4
      <out>/Flickr_8k.{train,dev,test}Images.txt   one id per line, 6:1:1
  'kaggle' (the Kaggle re-packaging, no split files):
      <out>/Images/<id>.jpg
      <out>/captions.txt                      header "image,caption", then
                                              "<id>,<caption>"

Output is a pure function of (num_images, image_size, seed, layout): the same
arguments give byte-identical files. Image i depends only on (seed, i), so a
larger dataset extends a smaller one.

Usage:
  python -m components.ingestion.shapes_dataset --output_dir /tmp/shapes \\
      --num_images 2000 --image_size 96 --seed 0
"""

import argparse
import dataclasses
import io
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

from components import features
from components import progress
from components.ingestion import flickr8k

# Very distinct RGB values, so colour survives JPEG and downscaling.
COLOURS = {
    'red': (215, 35, 35),
    'green': (35, 165, 55),
    'blue': (40, 70, 215),
    'yellow': (240, 210, 35),
}
SHAPES = ('circle', 'square', 'triangle')
# Position phrase -> nominal object centre (x, y) as fractions of the side:
# the edge-centre and centre cells of a 3x3 grid, pulled in a little so that a
# single object never leaves the image.
POSITIONS = {
    'on the left': (0.2, 0.5),
    'on the right': (0.8, 0.5),
    'at the top': (0.5, 0.2),
    'at the bottom': (0.5, 0.8),
    'in the center': (0.5, 0.5),
}
# Nominal centres of the first and second object of a pair, along the
# relation's axis (the other coordinate is 1/2).
PAIR_CENTRES = (0.27, 0.73)

# Every 4-gram of a caption names a colour, a shape, a position or a relation:
# no wording shared by all images ("a picture of a ...") lets a model that never
# looks at the image score well on BLEU-4 (tests/test_shapes_dataset.py holds
# the best constant caption below 0.42).
SINGLE_TEMPLATES = (
    '{a} {pos}',
    'there is {a} {pos}',
    'picture of {a} {pos}',
    'a single {a_words} {pos} of the image',
    '{pos} there is one {a_words}',
)
# {a} is the left object, {b} the right one.
SIDE_BY_SIDE_TEMPLATES = (
    '{a} to the left of {b}',
    '{b} to the right of {a}',
    'there is {a} left of {b}',
    'picture of {a} and {b} to its right',
    '{a} on the left and {b} on the right',
)
# {a} is the upper object, {b} the lower one.
STACKED_TEMPLATES = (
    '{a} above {b}',
    '{b} below {a}',
    'there is {a} over {b}',
    'picture of {a} and {b} under it',
    '{a} at the top and {b} at the bottom',
)
CAPTIONS_PER_IMAGE = 5

OFFICIAL = flickr8k.OFFICIAL
KAGGLE = flickr8k.KAGGLE
LAYOUTS = (OFFICIAL, KAGGLE)

# File names of the two layouts, from the reader (components/ingestion/flickr8k.py), so
# that what is written is exactly what is read. The official split files are
# keyed by their Flickr8k names here: train, dev, test.
OFFICIAL_IMAGE_DIR = flickr8k.OFFICIAL_IMAGE_DIRS[0]
OFFICIAL_TOKEN_FILE = flickr8k.TOKEN_FILE
OFFICIAL_SPLIT_FILES = {
    'train': flickr8k.SPLIT_FILES[features.TRAIN_SPLIT],
    'dev': flickr8k.SPLIT_FILES[features.EVAL_SPLIT],
    'test': flickr8k.SPLIT_FILES[features.DEMO_SPLIT],
}
KAGGLE_IMAGE_DIR = flickr8k.KAGGLE_IMAGE_DIR
KAGGLE_CAPTIONS_FILE = flickr8k.KAGGLE_CAPTIONS_FILE
KAGGLE_HEADER = ','.join(flickr8k.KAGGLE_HEADER)

_SPLIT_PROPORTIONS = (('train', 6), ('dev', 1), ('test', 1))
_JPEG_QUALITY = 95
_PAIR_SIZE_RANGE = (0.25, 0.35)  # object side / image side
_SINGLE_SIZE_RANGE = (0.25, 0.30)
_JITTER = 0.03  # max centre offset, fraction of the image side


@dataclasses.dataclass(frozen=True)
class SceneObject:
  colour: str
  shape: str
  centre: Tuple[float, float]  # (x, y), fractions of the image side
  size: float  # fraction of the image side

  @property
  def words(self) -> str:
    return f'{self.colour} {self.shape}'


@dataclasses.dataclass(frozen=True)
class Scene:
  """What one image shows; its captions are derived from this alone."""
  objects: Tuple[SceneObject, ...]  # one, or two ordered left/top first
  position: str  # a POSITIONS key (one object) or 'side by side' / 'stacked'

  def captions(self) -> List[str]:
    if len(self.objects) == 1:
      obj = self.objects[0]
      return [
          t.format(a=f'a {obj.words}', a_words=obj.words, pos=self.position)
          for t in SINGLE_TEMPLATES
      ]
    templates = (
        SIDE_BY_SIDE_TEMPLATES
        if self.position == 'side by side' else STACKED_TEMPLATES)
    first, second = self.objects
    return [
        t.format(a=f'a {first.words}', b=f'a {second.words}')
        for t in templates
    ]


def image_id(index: int) -> str:
  """File name (= Flickr8k image id) of image `index`."""
  return f'shapes_{index:05d}.jpg'


def make_scene(rng: np.random.Generator) -> Scene:
  """Draws a random scene description."""
  def jitter() -> float:
    return float(rng.uniform(-_JITTER, _JITTER))

  colours = list(COLOURS)
  if rng.random() < 0.5:
    position = str(rng.choice(list(POSITIONS)))
    x, y = POSITIONS[position]
    obj = SceneObject(
        colour=str(rng.choice(colours)),
        shape=str(rng.choice(SHAPES)),
        centre=(x + jitter(), y + jitter()),
        size=float(rng.uniform(*_SINGLE_SIZE_RANGE)))
    return Scene(objects=(obj,), position=position)

  kinds = [(c, s) for c in colours for s in SHAPES]
  first_kind, second_kind = (
      kinds[i] for i in rng.choice(len(kinds), size=2, replace=False))
  side_by_side = bool(rng.random() < 0.5)
  objects = []
  for (colour, shape), along in zip((first_kind, second_kind), PAIR_CENTRES):
    across = 0.5 + jitter()
    along += jitter()
    centre = (along, across) if side_by_side else (across, along)
    objects.append(
        SceneObject(colour=colour, shape=shape, centre=centre,
                    size=float(rng.uniform(*_PAIR_SIZE_RANGE))))
  return Scene(
      objects=tuple(objects),
      position='side by side' if side_by_side else 'stacked')


def render(scene: Scene, image_size: int,
           rng: np.random.Generator) -> np.ndarray:
  """Renders `scene` as a uint8 [image_size, image_size, 3] array."""
  grey = rng.uniform(200, 225)
  tint = rng.uniform(-8, 8, size=3)
  background = tuple(int(round(grey + t)) for t in tint)
  image = Image.new('RGB', (image_size, image_size), background)
  draw = ImageDraw.Draw(image)
  for obj in scene.objects:
    half = obj.size * image_size / 2
    cx, cy = obj.centre[0] * image_size, obj.centre[1] * image_size
    box = (cx - half, cy - half, cx + half, cy + half)
    colour = tuple(
        int(np.clip(v + rng.integers(-10, 11), 0, 255))
        for v in COLOURS[obj.colour])
    if obj.shape == 'circle':
      draw.ellipse(box, fill=colour)
    elif obj.shape == 'square':
      draw.rectangle(box, fill=colour)
    else:  # triangle, apex up
      draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])],
                   fill=colour)
  pixels = np.asarray(image, dtype=np.float32)
  pixels += rng.normal(0.0, 3.0, size=pixels.shape)
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def _encode_jpeg(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=_JPEG_QUALITY)
  return buffer.getvalue()


def _split_of(index: int, num_images: int) -> str:
  """Contiguous 6:1:1 blocks: train first, then dev, then test."""
  total = sum(weight for _, weight in _SPLIT_PROPORTIONS)
  boundary = 0
  for name, weight in _SPLIT_PROPORTIONS:
    boundary += weight
    if index < num_images * boundary // total:
      return name
  return _SPLIT_PROPORTIONS[-1][0]


def _write_lines(path: str, lines: Sequence[str]) -> None:
  with open(path, 'w', encoding='utf-8', newline='\n') as f:
    f.writelines(line + '\n' for line in lines)


def generate(output_dir: str,
             num_images: int = 2000,
             image_size: int = 96,
             seed: int = 0,
             layout: str = OFFICIAL) -> Dict[str, int]:
  """Writes the dataset into `output_dir` (created if missing).

  Args:
    output_dir: destination folder; existing files of the same names are
      overwritten.
    num_images: number of images (>= 1).
    image_size: side of the square images in pixels (>= 16).
    seed: random seed; output bytes are a function of the arguments only.
    layout: 'official' (Flickr8k distribution) or 'kaggle'.

  Returns:
    Counts: {'images', 'captions', 'train', 'dev', 'test'} (the split counts
    are those of the official split files, also for the Kaggle layout, which
    has none).
  """
  if layout not in LAYOUTS:
    raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
  if num_images < 1:
    raise ValueError(f'num_images must be >= 1, got {num_images}')
  if image_size < 16:
    raise ValueError(f'image_size must be >= 16, got {image_size}')

  image_dir = os.path.join(
      output_dir, OFFICIAL_IMAGE_DIR if layout == OFFICIAL else KAGGLE_IMAGE_DIR)
  os.makedirs(image_dir, exist_ok=True)
  token_lines, kaggle_lines = [], [KAGGLE_HEADER]
  splits = {name: [] for name, _ in _SPLIT_PROPORTIONS}
  for index in progress.track(range(num_images), num_images, 'generating images'):
    rng = np.random.default_rng([seed, index])
    scene = make_scene(rng)
    name = image_id(index)
    with open(os.path.join(image_dir, name), 'wb') as f:
      f.write(_encode_jpeg(render(scene, image_size, rng)))
    for n, caption in enumerate(scene.captions()):
      token_lines.append(f'{name}#{n}\t{caption}')
      kaggle_lines.append(f'{name},{caption}')
    splits[_split_of(index, num_images)].append(name)

  if layout == OFFICIAL:
    _write_lines(os.path.join(output_dir, OFFICIAL_TOKEN_FILE), token_lines)
    for split, file_name in OFFICIAL_SPLIT_FILES.items():
      _write_lines(os.path.join(output_dir, file_name), splits[split])
  else:
    _write_lines(os.path.join(output_dir, KAGGLE_CAPTIONS_FILE), kaggle_lines)
  counts = {'images': num_images, 'captions': len(token_lines)}
  counts.update({split: len(ids) for split, ids in splits.items()})
  return counts


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(
      prog='python -m components.ingestion.shapes_dataset',
      description=__doc__.split('\n\n')[0])
  parser.add_argument('--output_dir', required=True,
                      help='Folder to write the dataset into.')
  parser.add_argument('--num_images', type=int, default=2000,
                      help='Number of images (default: %(default)s).')
  parser.add_argument('--image_size', type=int, default=96,
                      help='Image side in pixels (default: %(default)s).')
  parser.add_argument('--seed', type=int, default=0,
                      help='Random seed (default: %(default)s).')
  parser.add_argument('--layout', choices=LAYOUTS, default=OFFICIAL,
                      help='Folder layout (default: %(default)s).')
  args = parser.parse_args(argv)
  counts = generate(args.output_dir, args.num_images, args.image_size,
                    args.seed, args.layout)
  print(json.dumps(counts))


if __name__ == '__main__':
  main()
