"""Deterministic generator of the embedded datasets: `shapes` (the default) and `scenes`.

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

`dataset='scenes'` writes the harder scenes of components/ingestion/scenes.py
instead (1 to 4 objects, counts, relations, overlaps, textured backgrounds,
varied wording), in the same layouts, its files named scenes_<index>.jpg.

Layouts written (`layout=`), the layouts the ExampleGen reads
(components/ingestion/layouts.py), with the official split's 6:1:1 blocks:
  'official' (default, the Flickr8k distribution):
      <out>/Flicker8k_Dataset/<id>.jpg       JPEG, quality 95
      <out>/Flickr8k.token.txt                "<id>#<n>\\t<caption>", n = 0..4
      <out>/Flickr_8k.{train,dev,test}Images.txt   one id per line, 6:1:1
  'kaggle' (the Kaggle re-packaging of Flickr8k, no split files):
      <out>/Images/<id>.jpg
      <out>/captions.txt                      header "image,caption", then
                                              "<id>,<caption>"
  'flickr30k' (Flickr30k as on Kaggle, no Karpathy file: hash splits):
      <out>/flickr30k_images/<id>.jpg
      <out>/results.csv                       header "image_name| comment_number| comment",
                                              then "<id>| <n>| <caption>"
  'coco' (MS COCO 2014, no Karpathy file): train blocks in train2014/, dev
      and test blocks in val2014/, named COCO_<set>2014_<12-digit index>.jpg:
      <out>/{train,val}2014/<id>.jpg
      <out>/annotations/captions_{train,val}2014.json   "images" + "annotations"
  'karpathy' (a Karpathy split file, train/val/test = the 6:1:1 blocks):
      <out>/images/<id>.jpg
      <out>/dataset_flickr8k.json             {"images": [{"filename", "split",
                                              "sentences": [{"raw", "tokens"}]}]}

Output is a pure function of (num_images, image_size, image_height, seed,
layout, dataset): the same arguments give byte-identical files (also with processes > 1,
which only renders the images in parallel). Image i depends only on (seed, i), so a
larger dataset extends a smaller one.

Usage:
  python -m components.ingestion.shapes_dataset --output_dir /tmp/shapes \\
      --num_images 2000 --image_size 96 --seed 0 [--dataset scenes]
"""

import argparse
import contextlib
import dataclasses
import io
import json
import multiprocessing
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from PIL import ImageDraw

from components import names
from components import progress
from components.ingestion import coco
from components.ingestion import flickr30k
from components.ingestion import flickr8k
from components.ingestion import karpathy
from components.ingestion import layouts
from components.ingestion import scenes

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
OFFICIAL = layouts.OFFICIAL
KAGGLE = layouts.KAGGLE
FLICKR30K = layouts.FLICKR30K
COCO = layouts.COCO
KARPATHY = layouts.KARPATHY
LAYOUTS = (OFFICIAL, KAGGLE, FLICKR30K, COCO, KARPATHY)

# File names of every layout, from its reader (components/ingestion/<layout>.py), so
# that what is written is exactly what is read. The official split files are
# keyed by their Flickr8k names here: train, dev, test.
OFFICIAL_IMAGE_DIR = flickr8k.OFFICIAL_IMAGE_DIRS[0]
OFFICIAL_TOKEN_FILE = flickr8k.TOKEN_FILE
OFFICIAL_SPLIT_FILES = {
    'train': flickr8k.SPLIT_FILES[names.TRAIN_SPLIT],
    'dev': flickr8k.SPLIT_FILES[names.EVAL_SPLIT],
    'test': flickr8k.SPLIT_FILES[names.DEMO_SPLIT],
}
KAGGLE_IMAGE_DIR = flickr8k.KAGGLE_IMAGE_DIR
KAGGLE_CAPTIONS_FILE = flickr8k.KAGGLE_CAPTIONS_FILE
KAGGLE_HEADER = ','.join(flickr8k.KAGGLE_HEADER)
FLICKR30K_IMAGE_DIR = flickr30k.IMAGE_DIR_NAME
FLICKR30K_RESULTS_FILE = flickr30k.RESULTS_FILE
FLICKR30K_HEADER = '| '.join(flickr30k.HEADER)
COCO_ANNOTATIONS_DIR = coco.ANNOTATIONS_DIR
COCO_SETS = coco.SETS  # COCO set -> (captions file, image folder)
KARPATHY_IMAGE_DIR = karpathy.KARPATHY_IMAGE_DIRS[0]
KARPATHY_SPLIT_FILE = karpathy.SPLIT_FILE_NAMES[0]
# Official split blocks -> Karpathy split names, COCO sets.
KARPATHY_SPLITS = {'train': 'train', 'dev': 'val', 'test': 'test'}
COCO_SET_OF_SPLIT = {'train': 'train', 'dev': 'val', 'test': 'val'}

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


def image_id(index: int, layout: str = OFFICIAL, split: str = 'train',
             dataset: str = names.SHAPES_DATASET) -> str:
  """File name (= image id) of image `index` in its official-split block
  `split`; COCO names its files after its sets, like the real dataset."""
  if layout == COCO:
    return f'COCO_{COCO_SET_OF_SPLIT[split]}2014_{index:012d}.jpg'
  return f'{dataset}_{index:05d}.jpg'


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


def render(scene: Scene, width: int, height: int,
           rng: np.random.Generator) -> np.ndarray:
  """Renders `scene` as a uint8 [height, width, 3] array (object sizes are
  fractions of the shorter side, so circles stay round)."""
  grey = rng.uniform(200, 225)
  tint = rng.uniform(-8, 8, size=3)
  background = tuple(int(round(grey + t)) for t in tint)
  image = Image.new('RGB', (width, height), background)
  draw = ImageDraw.Draw(image)
  for obj in scene.objects:
    half = obj.size * min(width, height) / 2
    cx, cy = obj.centre[0] * width, obj.centre[1] * height
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


def _write_json(path: str, value: object) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(value, f)


def _draw(task: Tuple[int, int, int, int, str]) -> Tuple[List[str], bytes]:
  """(captions, JPEG bytes) of image `index`: a function of (seed, index, size, dataset)."""
  seed, index, width, height, dataset = task
  rng = np.random.default_rng([seed, index])
  if dataset == names.SCENES_DATASET:
    _, captions, pixels = scenes.draw(rng, width, height)
    return captions, _encode_jpeg(pixels)
  scene = make_scene(rng)
  return scene.captions(), _encode_jpeg(render(scene, width, height, rng))


def _image_dir(output_dir: str, layout: str, split: str) -> str:
  folder = {
      OFFICIAL: OFFICIAL_IMAGE_DIR,
      KAGGLE: KAGGLE_IMAGE_DIR,
      FLICKR30K: FLICKR30K_IMAGE_DIR,
      KARPATHY: KARPATHY_IMAGE_DIR,
  }.get(layout) or COCO_SETS[COCO_SET_OF_SPLIT[split]][1]
  return os.path.join(output_dir, folder)


class _TextFiles:
  """Every layout's text files of the same images and captions, filled image by image.

  Kept for all layouts whatever the one written, so that every layout names
  the same images, captions and splits (the tests compare the readers on them).
  """

  def __init__(self):
    self.token_lines, self.kaggle_lines, self.results_lines = [], [KAGGLE_HEADER], [FLICKR30K_HEADER]
    self.coco_files = {name: {'images': [], 'annotations': []} for name in COCO_SETS}
    self.karpathy_entries = []
    self.splits = {name: [] for name, _ in _SPLIT_PROPORTIONS}

  def add(self, index: int, name: str, split: str, captions: Sequence[str], width: int,
          height: int) -> None:
    """Image `index`, file `name`, in every layout's files."""
    self.splits[split].append(name)
    coco_file = self.coco_files[COCO_SET_OF_SPLIT[split]]
    for n, caption in enumerate(captions):
      self.token_lines.append(f'{name}#{n}\t{caption}')
      self.kaggle_lines.append(f'{name},{caption}')
      self.results_lines.append(f'{name}| {n}| {caption}')
      coco_file['annotations'].append(
          {'image_id': index, 'id': index * len(captions) + n, 'caption': caption})
    coco_file['images'].append({'id': index, 'file_name': name, 'width': width, 'height': height})
    self.karpathy_entries.append({
        'imgid': index, 'filename': name, 'split': KARPATHY_SPLITS[split],
        'sentences': [{'raw': c, 'tokens': c.split()} for c in captions]})

  def write(self, output_dir: str, layout: str, dataset: str) -> None:
    """Writes the text files of `layout` into `output_dir`."""
    if layout == OFFICIAL:
      _write_lines(os.path.join(output_dir, OFFICIAL_TOKEN_FILE), self.token_lines)
      for split, file_name in OFFICIAL_SPLIT_FILES.items():
        _write_lines(os.path.join(output_dir, file_name), self.splits[split])
    elif layout == KAGGLE:
      _write_lines(os.path.join(output_dir, KAGGLE_CAPTIONS_FILE), self.kaggle_lines)
    elif layout == FLICKR30K:
      _write_lines(os.path.join(output_dir, FLICKR30K_RESULTS_FILE), self.results_lines)
    elif layout == COCO:
      for name, (captions_file, image_dir) in COCO_SETS.items():
        os.makedirs(os.path.join(output_dir, image_dir), exist_ok=True)
        _write_json(os.path.join(output_dir, COCO_ANNOTATIONS_DIR, captions_file),
                    dict({'info': {'description': dataset}}, **self.coco_files[name]))
    else:
      _write_json(os.path.join(output_dir, KARPATHY_SPLIT_FILE),
                  {'images': self.karpathy_entries, 'dataset': 'flickr8k'})


def generate(output_dir: str,
             num_images: int = 2000,
             image_size: int = 96,
             seed: int = 0,
             layout: str = OFFICIAL,
             image_height: Optional[int] = None,
             processes: int = 1,
             dataset: str = names.SHAPES_DATASET) -> Dict[str, int]:
  """Writes the dataset into `output_dir` (created if missing).

  Args:
    output_dir: destination folder; existing files of the same names are
      overwritten.
    num_images: number of images (>= 1).
    image_size: width of the images in pixels (>= 16).
    seed: random seed; output bytes are a function of the arguments only.
    layout: one of LAYOUTS.
    image_height: height in pixels (>= 16); None: square images.
    processes: processes rendering images in parallel (same bytes).
    dataset: one of names.EMBEDDED_DATASET_NAMES.

  Returns:
    Counts: {'images', 'captions', 'train', 'dev', 'test'} (the split counts
    are those of the official split blocks, whatever the layout).
  """
  if layout not in LAYOUTS:
    raise ValueError(f'layout must be one of {LAYOUTS}, got {layout!r}')
  if dataset not in names.EMBEDDED_DATASET_NAMES:
    raise ValueError(f'dataset must be one of {names.EMBEDDED_DATASET_NAMES}, got {dataset!r}')
  if num_images < 1:
    raise ValueError(f'num_images must be >= 1, got {num_images}')
  height = image_size if image_height is None else image_height
  if min(image_size, height) < 16:
    raise ValueError(f'image sides must be >= 16, got {image_size}x{height}')

  tasks = [(seed, index, image_size, height, dataset) for index in range(num_images)]
  text_files = _TextFiles()
  with multiprocessing.Pool(processes) if processes > 1 else contextlib.nullcontext() as pool:
    drawn = pool.imap(_draw, tasks, chunksize=16) if pool else map(_draw, tasks)
    for index, (captions, jpeg) in enumerate(progress.track(drawn, num_images, 'generating images')):
      split = _split_of(index, num_images)
      name = image_id(index, layout, split, dataset)
      image_dir = _image_dir(output_dir, layout, split)
      os.makedirs(image_dir, exist_ok=True)
      with open(os.path.join(image_dir, name), 'wb') as f:
        f.write(jpeg)
      text_files.add(index, name, split, captions, image_size, height)
  text_files.write(output_dir, layout, dataset)
  counts = {'images': num_images, 'captions': len(text_files.token_lines)}
  counts.update({split: len(ids) for split, ids in text_files.splits.items()})
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
                      help='Image width (and height, unless --image_height) in pixels '
                           '(default: %(default)s).')
  parser.add_argument('--image_height', type=int, default=None,
                      help='Image height in pixels (default: square images).')
  parser.add_argument('--seed', type=int, default=0,
                      help='Random seed (default: %(default)s).')
  parser.add_argument('--layout', choices=LAYOUTS, default=OFFICIAL,
                      help='Folder layout (default: %(default)s).')
  parser.add_argument('--processes', type=int, default=1,
                      help='Processes rendering images (default: %(default)s).')
  parser.add_argument('--dataset', choices=names.EMBEDDED_DATASET_NAMES, default=names.SHAPES_DATASET,
                      help='Which scenes: the quick shapes, or the harder scenes (default: %(default)s).')
  args = parser.parse_args(argv)
  counts = generate(args.output_dir, args.num_images, args.image_size,
                    args.seed, args.layout, args.image_height, args.processes, args.dataset)
  print(json.dumps(counts))


if __name__ == '__main__':
  main()
