"""Tests of the embedded dataset generator: layout, determinism, and captions
that are true of the pixels."""

import collections
import filecmp
import io
import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Dict, List

import numpy as np
from PIL import Image
import pytest

from components.ingestion import shapes_dataset
from nltk.translate import bleu_score

# Colour names as a viewer would judge them, independent of the generator's
# exact palette.
REFERENCE_COLOURS = {
    'red': (255, 0, 0),
    'green': (0, 170, 0),
    'blue': (0, 0, 255),
    'yellow': (255, 230, 0),
}
# Area of the shape / area of its bounding box.
FILL_RATIOS = {'triangle': 0.5, 'circle': np.pi / 4, 'square': 1.0}
OBJECT = r'a (\w+) (\w+)'
SINGLE = re.compile(rf'^{OBJECT} (on the left|on the right|at the top|'
                    r'at the bottom|in the center)$')
SIDE_BY_SIDE = re.compile(rf'^{OBJECT} to the left of {OBJECT}$')
STACKED = re.compile(rf'^{OBJECT} above {OBJECT}$')


def _token_captions(root: pathlib.Path) -> Dict[str, List[str]]:
  captions = collections.defaultdict(list)
  for line in (root / shapes_dataset.OFFICIAL_TOKEN_FILE).read_text(
      encoding='utf-8').splitlines():
    key, caption = line.split('\t')
    image_id, n = key.split('#')
    assert int(n) == len(captions[image_id]), f'caption numbers of {image_id}'
    captions[image_id].append(caption)
  return captions


@pytest.fixture(scope='module')
def official(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp('official')
  counts = shapes_dataset.generate(str(root), num_images=120, image_size=96)
  assert counts == {'images': 120, 'captions': 600, 'train': 90, 'dev': 15,
                    'test': 15}
  return root


def test_official_layout(official):
  images = sorted(os.listdir(official / shapes_dataset.OFFICIAL_IMAGE_DIR))
  assert len(images) == 120
  captions = _token_captions(official)
  assert sorted(captions) == images
  assert all(len(c) == 5 and len(set(c)) == 5 for c in captions.values())
  splits = {
      name: (official / file_name).read_text().split()
      for name, file_name in shapes_dataset.OFFICIAL_SPLIT_FILES.items()
  }
  assert [len(splits[s]) for s in ('train', 'dev', 'test')] == [90, 15, 15]
  assert sorted(sum(splits.values(), [])) == images  # disjoint, complete
  for name in images:
    with Image.open(official / shapes_dataset.OFFICIAL_IMAGE_DIR / name) as im:
      assert (im.format, im.mode, im.size) == ('JPEG', 'RGB', (96, 96))


def test_vocabulary_and_template_regularity(official):
  captions = _token_captions(official)
  vocabulary = {w for c in captions.values() for line in c for w in line.split()}
  assert len(vocabulary) >= 25
  assert set(shapes_dataset.COLOURS) | set(shapes_dataset.SHAPES) <= vocabulary
  # Slot n of every image of a scene type uses the same template: with the
  # object words masked, slot n has one wording per scene type.
  masked = collections.defaultdict(set)
  object_words = '|'.join([*shapes_dataset.COLOURS, *shapes_dataset.SHAPES])
  for image_captions in captions.values():
    for n, caption in enumerate(image_captions):
      masked[n].add(re.sub(rf'\b({object_words})\b', 'X', caption))
  for n, wordings in masked.items():
    # 5 positions of a single object + side-by-side + stacked.
    assert len(wordings) == 7, (n, wordings)


def _colour_masks(pixels: np.ndarray) -> Dict[str, np.ndarray]:
  """Colour name -> bool mask of the saturated pixels nearest that colour."""
  saturated = pixels.max(-1).astype(int) - pixels.min(-1) > 80
  names = list(REFERENCE_COLOURS)
  reference = np.array([REFERENCE_COLOURS[n] for n in names], np.float32)
  distance = np.linalg.norm(
      pixels[..., None, :].astype(np.float32) - reference, axis=-1)
  nearest = distance.argmin(-1)
  return {n: saturated & (nearest == i) for i, n in enumerate(names)}


def _check_object(region: np.ndarray, colour: str, shape: str, where: str):
  """The region's only object has `colour` and `shape`; returns its centre."""
  masks = _colour_masks(region)
  counts = {n: int(m.sum()) for n, m in masks.items()}
  assert max(counts, key=counts.get) == colour, (where, counts)
  mask = masks[colour]
  assert counts[colour] > 0.9 * sum(counts.values()), (where, counts)
  ys, xs = np.nonzero(mask)
  box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
  fill = mask.sum() / box
  nearest = min(FILL_RATIOS, key=lambda s: abs(FILL_RATIOS[s] - fill))
  assert nearest == shape, (where, fill)
  return xs.mean() / region.shape[1], ys.mean() / region.shape[0]


def test_captions_are_true_of_the_pixels(official):
  captions = _token_captions(official)
  seen = collections.Counter()
  for image_id, image_captions in sorted(captions.items()):
    path = official / shapes_dataset.OFFICIAL_IMAGE_DIR / image_id
    pixels = np.asarray(Image.open(path).convert('RGB'))
    half = pixels.shape[0] // 2
    first = image_captions[0]
    if match := SINGLE.match(first):
      colour, shape, position = match.groups()
      x, y = _check_object(pixels, colour, shape, image_id)
      column = 'left' if x < 1 / 3 else 'right' if x > 2 / 3 else 'center'
      row = 'top' if y < 1 / 3 else 'bottom' if y > 2 / 3 else 'center'
      assert position.split()[-1] == (row if column == 'center' else column)
      assert row == 'center' or column == 'center', (image_id, x, y)
      objects = [f'{colour} {shape}']
      seen[position] += 1
    elif match := SIDE_BY_SIDE.match(first):
      c1, s1, c2, s2 = match.groups()
      _check_object(pixels[:, :half], c1, s1, f'{image_id} left half')
      _check_object(pixels[:, half:], c2, s2, f'{image_id} right half')
      objects = [f'{c1} {s1}', f'{c2} {s2}']
      assert f'a {c2} {s2} to the right of a {c1} {s1}' == image_captions[1]
      seen['side by side'] += 1
    elif match := STACKED.match(first):
      c1, s1, c2, s2 = match.groups()
      _check_object(pixels[:half], c1, s1, f'{image_id} top half')
      _check_object(pixels[half:], c2, s2, f'{image_id} bottom half')
      objects = [f'{c1} {s1}', f'{c2} {s2}']
      assert f'a {c2} {s2} below a {c1} {s1}' == image_captions[1]
      seen['stacked'] += 1
    else:
      raise AssertionError(f'unexpected first caption {first!r}')
    for caption in image_captions:  # every caption names the same objects
      named = re.findall(
          rf'\b({"|".join(shapes_dataset.COLOURS)}) '
          rf'({"|".join(shapes_dataset.SHAPES)})\b', caption)
      assert sorted(' '.join(o) for o in named) == sorted(objects), caption
  # Every scene type occurs.
  assert set(seen) == {*shapes_dataset.POSITIONS, 'side by side', 'stacked'}


def test_output_is_a_function_of_the_arguments(tmp_path):
  shapes_dataset.generate(str(tmp_path / 'a'), num_images=12, image_size=32)
  shapes_dataset.generate(str(tmp_path / 'b'), num_images=12, image_size=32)
  shapes_dataset.generate(str(tmp_path / 'c'), num_images=12, image_size=32,
                          seed=1)
  comparison = filecmp.dircmp(tmp_path / 'a', tmp_path / 'b')
  assert not comparison.left_only and not comparison.right_only
  for sub in ['', shapes_dataset.OFFICIAL_IMAGE_DIR]:
    names = os.listdir(tmp_path / 'a' / sub)
    match, mismatch, errors = filecmp.cmpfiles(
        tmp_path / 'a' / sub, tmp_path / 'b' / sub,
        [n for n in names if os.path.isfile(tmp_path / 'a' / sub / n)],
        shallow=False)
    assert not mismatch and not errors and match
  assert (tmp_path / 'a' / shapes_dataset.OFFICIAL_TOKEN_FILE).read_bytes() != (
      tmp_path / 'c' / shapes_dataset.OFFICIAL_TOKEN_FILE).read_bytes()


def test_kaggle_layout_has_the_same_data(tmp_path):
  shapes_dataset.generate(str(tmp_path / 'o'), num_images=10, image_size=32)
  shapes_dataset.generate(str(tmp_path / 'k'), num_images=10, image_size=32,
                          layout=shapes_dataset.KAGGLE)
  kaggle = tmp_path / 'k'
  assert sorted(os.listdir(kaggle)) == [shapes_dataset.KAGGLE_IMAGE_DIR,
                                        shapes_dataset.KAGGLE_CAPTIONS_FILE]
  lines = (kaggle / shapes_dataset.KAGGLE_CAPTIONS_FILE).read_text().splitlines()
  assert lines[0] == 'image,caption'
  captions = collections.defaultdict(list)
  for line in lines[1:]:
    image_id, caption = line.split(',')
    captions[image_id].append(caption)
  assert captions == _token_captions(tmp_path / 'o')
  for image_id in captions:
    assert (kaggle / shapes_dataset.KAGGLE_IMAGE_DIR / image_id).read_bytes() == (
        tmp_path / 'o' / shapes_dataset.OFFICIAL_IMAGE_DIR / image_id
    ).read_bytes()


def _read_other_layout(root: pathlib.Path, layout: str) -> Dict[str, tuple]:
  """image index -> (official split block, captions, image bytes), from the
  files of a generated flickr30k, coco or karpathy folder."""
  index = lambda name: int(re.search(r'(\d+)\.jpg$', name).group(1))
  found = {}
  if layout == shapes_dataset.FLICKR30K:
    lines = (root / shapes_dataset.FLICKR30K_RESULTS_FILE).read_text().splitlines()
    assert lines[0] == 'image_name| comment_number| comment'
    captions = collections.defaultdict(list)
    for line in lines[1:]:
      name, number, caption = line.split('| ')
      assert int(number) == len(captions[name])
      captions[name].append(caption)
    for name, texts in captions.items():
      found[index(name)] = (None, texts, (root / shapes_dataset.FLICKR30K_IMAGE_DIR / name).read_bytes())
  elif layout == shapes_dataset.COCO:
    for coco_set, (captions_file, image_dir) in shapes_dataset.COCO_SETS.items():
      data = json.loads((root / shapes_dataset.COCO_ANNOTATIONS_DIR / captions_file).read_text())
      captions = collections.defaultdict(list)
      for annotation in data['annotations']:
        captions[annotation['image_id']].append(annotation['caption'])
      for image in data['images']:
        assert image['file_name'] == f'COCO_{coco_set}2014_{image["id"]:012d}.jpg'
        found[image['id']] = (coco_set, captions[image['id']],
                              (root / image_dir / image['file_name']).read_bytes())
  else:
    data = json.loads((root / shapes_dataset.KARPATHY_SPLIT_FILE).read_text())
    for entry in data['images']:
      found[index(entry['filename'])] = (
          entry['split'], [s['raw'] for s in entry['sentences']],
          (root / shapes_dataset.KARPATHY_IMAGE_DIR / entry['filename']).read_bytes())
  return found


@pytest.mark.parametrize('layout', [shapes_dataset.FLICKR30K, shapes_dataset.COCO,
                                    shapes_dataset.KARPATHY])
def test_other_layouts_have_the_same_data_and_splits(tmp_path, layout):
  shapes_dataset.generate(str(tmp_path / 'o'), num_images=16, image_size=32)
  shapes_dataset.generate(str(tmp_path / 'x'), num_images=16, image_size=32, layout=layout,
                          processes=2)
  official = _token_captions(tmp_path / 'o')
  blocks = {image_id: block for block, file_name in shapes_dataset.OFFICIAL_SPLIT_FILES.items()
            for image_id in (tmp_path / 'o' / file_name).read_text().split()}
  found = _read_other_layout(tmp_path / 'x', layout)
  assert sorted(found) == list(range(16))
  for index, (split, captions, image) in found.items():
    image_id = shapes_dataset.image_id(index)
    assert captions == official[image_id]
    assert image == (tmp_path / 'o' / shapes_dataset.OFFICIAL_IMAGE_DIR / image_id).read_bytes()
    if layout == shapes_dataset.COCO:
      assert split == shapes_dataset.COCO_SET_OF_SPLIT[blocks[image_id]]
    elif layout == shapes_dataset.KARPATHY:
      assert split == shapes_dataset.KARPATHY_SPLITS[blocks[image_id]]


def test_images_may_be_wider_than_high(tmp_path):
  shapes_dataset.generate(str(tmp_path), num_images=3, image_size=64, image_height=48)
  for index in range(3):
    path = tmp_path / shapes_dataset.OFFICIAL_IMAGE_DIR / shapes_dataset.image_id(index)
    with Image.open(path) as image:
      assert image.size == (64, 48)


def test_command_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'components.ingestion.shapes_dataset', '--output_dir',
       str(tmp_path), '--num_images', '8', '--image_size', '24', '--seed', '3'],
      check=True, capture_output=True, text=True,
      cwd=pathlib.Path(__file__).resolve().parents[1])
  assert '"images": 8' in result.stdout
  jpeg = (tmp_path / shapes_dataset.OFFICIAL_IMAGE_DIR /
          shapes_dataset.image_id(7)).read_bytes()
  assert Image.open(io.BytesIO(jpeg)).size == (24, 24)


def test_no_caption_that_ignores_the_image_scores_well(tmp_path):
  # A model blind to the image (the captions-only baseline) can at best emit one
  # fixed caption; the wording must not let any fixed caption score well, or a
  # captioner could not beat it by the margin the pipeline's gate asks for.
  shapes_dataset.generate(str(tmp_path), num_images=400, image_size=32, seed=0)
  captions = _token_captions(tmp_path)
  split_ids = {
      split: (tmp_path / name).read_text().split()
      for split, name in shapes_dataset.OFFICIAL_SPLIT_FILES.items()}
  references = [[c.split() for c in captions[i]] for i in split_ids['test']]
  candidates = sorted({c for i in split_ids['train'] for c in captions[i]})
  best = max(bleu_score.corpus_bleu(references, [c.split()] * len(references))
             for c in candidates)
  assert best < 0.42
