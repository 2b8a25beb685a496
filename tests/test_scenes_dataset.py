"""Tests of the `scenes` embedded dataset: determinism, every layout read back by
the ExampleGen, and captions that are true of the scene drawn and of its pixels."""

import collections
import filecmp
import io
import math
import os
import pathlib
import re
import subprocess
import sys
from typing import Dict, List

import numpy as np
from PIL import Image
import pytest
from scipy import ndimage

from components import names
from components.ingestion import scenes
from components.ingestion import shapes_dataset
from nltk.translate import bleu_score
from testing import executors
from testing import ingestion

SCENES = names.SCENES_DATASET
IMAGE_SIZE = 128
# Caption words back to what they name.
NUMBERS = {'a': 1, 'an': 1, 'one': 1, 'two': 2, 'a pair of': 2, 'three': 3, 'four': 4}
SIZES = {word: size for size, words in scenes.SIZE_WORDS.items() for word, _ in words}
SHAPE_NAMES = {word: (shape, number) for shape, words in scenes.SHAPE_WORDS.items()
               for singular, plural, _ in words for word, number in ((singular, 1), (plural, 2))}
BACKGROUND_NAMES = {word: background for background, words in scenes.BACKGROUND_WORDS.items() for word, _ in words}
POSITION_NAMES = {phrase: cell for cell, phrases in scenes.POSITION_WORDS.items() for phrase, _ in phrases}


def _alternatives(words) -> str:
  return '|'.join(sorted(map(re.escape, words), key=len, reverse=True))


# One named object or group: count, optional size, colour, shape.
OBJECT = re.compile(rf'\b({_alternatives(NUMBERS)}) (?:({_alternatives(SIZES)}) )?({_alternatives(scenes.COLOURS)}) '
                    rf'({_alternatives(SHAPE_NAMES)})\b')
BACKGROUND = re.compile(rf'on an? ({_alternatives(BACKGROUND_NAMES)}) background')
POSITION = re.compile(rf'\b({_alternatives(POSITION_NAMES)})\b')
# Relation words: (first object named before second) -> which comes first in the scene's order
# (pair: left or upper object first; overlap: back object first).
FIRST_IS_LEFT_OR_UPPER = ('to the left of', 'left of', 'on the left and', 'above', 'over', 'at the top and',
                          'to its right', 'beneath it')
SECOND_IS_LEFT_OR_UPPER = ('to the right of', 'on the right of', 'below', 'under')
FIRST_IS_FRONT = ('in front of', 'partly covering', 'overlapping', 'on top of')
SECOND_IS_FRONT = ('behind', 'partly hidden by')


def _scenes(count: int, seed: int = 0):
  """(scene, captions, pixels) of images 0..count-1 of `seed`, drawn as the generator draws them."""
  return [scenes.draw(np.random.default_rng([seed, index]), IMAGE_SIZE, IMAGE_SIZE) for index in range(count)]


def _token_captions(root: pathlib.Path) -> Dict[str, List[str]]:
  captions = collections.defaultdict(list)
  for line in (root / shapes_dataset.OFFICIAL_TOKEN_FILE).read_text(encoding='utf-8').splitlines():
    key, caption = line.split('\t')
    captions[key.split('#')[0]].append(caption)
  return captions


@pytest.fixture(scope='module')
def official(tmp_path_factory) -> pathlib.Path:
  root = tmp_path_factory.mktemp('scenes')
  counts = shapes_dataset.generate(str(root), num_images=80, image_size=IMAGE_SIZE, seed=0, dataset=SCENES)
  assert counts == {'images': 80, 'captions': 400, 'train': 60, 'dev': 10, 'test': 10}
  return root


def test_files_hold_the_drawn_scenes(official):
  captions = _token_captions(official)
  assert sorted(captions) == [shapes_dataset.image_id(i, dataset=SCENES) for i in range(80)]
  drawn = _scenes(80)
  for index, (_, drawn_captions, pixels) in enumerate(drawn):
    image_id = shapes_dataset.image_id(index, dataset=SCENES)
    assert captions[image_id] == drawn_captions
    assert len(set(drawn_captions)) == scenes.CAPTIONS_PER_IMAGE
    with Image.open(official / shapes_dataset.OFFICIAL_IMAGE_DIR / image_id) as image:
      assert (image.format, image.size) == ('JPEG', (IMAGE_SIZE, IMAGE_SIZE))
      decoded = np.asarray(image.convert('RGB'), np.float32)
    # The JPEG is of these pixels (lossy: close, not equal), not of the next image's.
    error = np.abs(decoded - pixels).mean()
    assert error < 8 and error < 0.5 * np.abs(decoded - drawn[(index + 1) % 80][2]).mean(), image_id


def test_output_is_a_function_of_the_arguments(tmp_path):
  for name, seed in (('a', 0), ('b', 0), ('c', 1)):
    shapes_dataset.generate(str(tmp_path / name), num_images=12, image_size=64, seed=seed, dataset=SCENES,
                            processes=2 if name == 'b' else 1)
  for sub in ['', shapes_dataset.OFFICIAL_IMAGE_DIR]:
    files = sorted(n for n in os.listdir(tmp_path / 'a' / sub) if os.path.isfile(tmp_path / 'a' / sub / n))
    assert sorted(n for n in os.listdir(tmp_path / 'b' / sub) if os.path.isfile(tmp_path / 'b' / sub / n)) == files
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a' / sub, tmp_path / 'b' / sub, files, shallow=False)
    assert match and not mismatch and not errors
  assert (tmp_path / 'a' / shapes_dataset.OFFICIAL_TOKEN_FILE).read_bytes() != (
      tmp_path / 'c' / shapes_dataset.OFFICIAL_TOKEN_FILE).read_bytes()
  # A larger dataset extends a smaller one.
  shapes_dataset.generate(str(tmp_path / 'd'), num_images=6, image_size=64, seed=0, dataset=SCENES)
  name = shapes_dataset.image_id(5, dataset=SCENES)
  assert (tmp_path / 'd' / shapes_dataset.OFFICIAL_IMAGE_DIR / name).read_bytes() == (
      tmp_path / 'a' / shapes_dataset.OFFICIAL_IMAGE_DIR / name).read_bytes()


@pytest.mark.parametrize('layout', shapes_dataset.LAYOUTS)
def test_every_layout_reads_back_through_the_example_gen(tmp_path, layout):
  num_images = 24
  shapes_dataset.generate(str(tmp_path / 'official'), num_images, 64, seed=2, dataset=SCENES)
  shapes_dataset.generate(str(tmp_path / 'data'), num_images, 64, seed=2, layout=layout, dataset=SCENES)
  examples, report = executors.run_example_gen(str(tmp_path / 'data'), str(tmp_path / 'out'))
  rejects, _ = ingestion.read_report(report)
  assert rejects == []
  splits = ingestion.read_all(examples)
  expected = _token_captions(tmp_path / 'official')
  read = {}
  for split, records in splits.items():
    for image_id, (image, references) in records.items():
      index = int(re.search(r'(\d+)\.jpg$', image_id).group(1))
      read[index] = (split, image, list(references))
  assert sorted(read) == list(range(num_images))
  official_ids = {split: (tmp_path / 'official' / name).read_text().split()
                  for split, name in shapes_dataset.OFFICIAL_SPLIT_FILES.items()}
  block_of = {image_id: block for block, ids in official_ids.items() for image_id in ids}
  pipeline_split = {'train': names.TRAIN_SPLIT, 'dev': names.EVAL_SPLIT, 'test': names.DEMO_SPLIT}
  for index, (split, image, references) in read.items():
    image_id = shapes_dataset.image_id(index, dataset=SCENES)
    assert [r.decode() if isinstance(r, bytes) else r for r in references] == expected[image_id]
    assert image == (tmp_path / 'official' / shapes_dataset.OFFICIAL_IMAGE_DIR / image_id).read_bytes()
    if layout in (shapes_dataset.OFFICIAL, shapes_dataset.KAGGLE, shapes_dataset.KARPATHY):
      if layout != shapes_dataset.KAGGLE:  # Kaggle's Flickr8k has no split files
        assert split == pipeline_split[block_of[image_id]], (layout, image_id)


def _named_objects(caption: str) -> List[tuple]:
  """(count, size word's size or None, colour, shape) of each object phrase, in caption order."""
  found = []
  for count, size, colour, shape_word in OBJECT.findall(caption):
    shape, number = SHAPE_NAMES[shape_word]
    assert (number == 1) == (NUMBERS[count] == 1), caption  # 'a circles', 'two circle'
    found.append((NUMBERS[count], SIZES.get(size), colour, shape))
  return found


def _relation_words(caption: str, phrases) -> bool:
  return any(re.search(r'\b' + re.escape(p) + r'\b', caption) for p in phrases)


def test_captions_say_what_the_scene_holds():
  kinds = collections.Counter()
  for scene, scene_captions, _ in _scenes(400, seed=5):
    kinds[scene.kind] += 1
    groups = {(colour, shape): count for count, colour, shape in scene.groups()}
    for caption in scene_captions:
      named = _named_objects(caption)
      assert {(colour, shape): count for count, _, colour, shape in named} == groups, (caption, scene)
      for _, size, colour, shape in named:  # a size word fits every object it describes
        for obj in scene.objects:
          if size and (obj.colour, obj.shape) == (colour, shape):
            assert obj.size_word == size, (caption, obj)
            assert obj.size <= scenes.SMALL_MAX if size == 'small' else obj.size >= scenes.LARGE_MIN
      if match := BACKGROUND.search(caption):
        assert BACKGROUND_NAMES[match.group(1)] == scene.background, caption
      if scene.kind == 'single':
        [phrase] = POSITION.findall(caption)
        x, y = scene.objects[0].centre
        column = 'left' if x < 1 / 3 else 'right' if x > 2 / 3 else ''
        row = 'top' if y < 1 / 3 else 'bottom' if y > 2 / 3 else ''
        assert POSITION_NAMES[phrase] == (f'{row} {column}'.strip() or 'center'), (caption, x, y)
      if scene.kind in ('pair', 'overlap'):
        first, second = named
        order = [(o.colour, o.shape) for o in scene.objects]
        named_first = order.index(first[2:])
        assert order.index(second[2:]) == 1 - named_first
        if scene.kind == 'pair':
          axis = 0 if scene.arrangement == 'side by side' else 1
          a, b = scene.objects
          assert a.centre[axis] + (a.size + b.size) / 2 < b.centre[axis] + 0.01  # apart along the axis
          first_leads = _relation_words(caption, FIRST_IS_LEFT_OR_UPPER)
          assert first_leads != _relation_words(caption, SECOND_IS_LEFT_OR_UPPER), caption
          assert (named_first == 0) == first_leads, caption
        else:
          first_front = _relation_words(caption, FIRST_IS_FRONT)
          assert first_front != _relation_words(caption, SECOND_IS_FRONT), caption
          assert (named_first == 1) == first_front, caption  # the front object is drawn last
  assert set(kinds) == set(scenes.KINDS)


def _colour_masks(pixels: np.ndarray) -> Dict[str, np.ndarray]:
  """Colour name -> mask of the pixels close to that palette colour (not the grey background, its
  texture or clutter, and not the blends at object edges)."""
  pixels = pixels.astype(np.float32)
  return {name: np.linalg.norm(pixels - np.array(rgb, np.float32), axis=-1) < 60
          for name, rgb in scenes.COLOURS.items()}


def _visible_share(scene: scenes.Scene, obj: scenes.SceneObject, mask: np.ndarray) -> float:
  """Share of the object's pixels, drawn alone on a plain background, that `mask` (its colour in the image) covers."""
  alone = scenes.render(scenes.Scene(scene.kind, (obj,), 'plain'), IMAGE_SIZE, IMAGE_SIZE, np.random.default_rng(0))
  drawn = _colour_masks(alone)[obj.colour]
  return float((drawn & mask).sum() / drawn.sum())


def test_pixels_show_the_named_colours_and_counts(official):
  checked = collections.Counter()
  for index, (scene, _, _) in enumerate(_scenes(80)):
    path = official / shapes_dataset.OFFICIAL_IMAGE_DIR / shapes_dataset.image_id(index, dataset=SCENES)
    pixels = np.asarray(Image.open(path).convert('RGB'))
    masks = _colour_masks(pixels)
    smallest = min(obj.size for obj in scene.objects) * IMAGE_SIZE
    # An object's core is at least a fifth of its box (a star's); JPEG fringes are far smaller.
    min_area = 0.2 * smallest ** 2 / 2
    colours = collections.Counter(obj.colour for obj in scene.objects)
    for colour, mask in masks.items():
      labels, count = ndimage.label(mask)
      areas = ndimage.sum(mask, labels, range(1, count + 1))
      blobs = int((areas >= min_area).sum())
      if scene.kind == 'overlap':  # the back object may be cut in two by the front one
        assert (areas.max(initial=0) >= 20) == (colour in colours), (path.name, colour, sorted(areas))
      else:
        assert blobs == colours[colour], (path.name, scene.kind, colour, blobs, sorted(areas))
    if scene.kind == 'pair':  # the object named first is left of / above the other one
      axis = 1 if scene.arrangement == 'side by side' else 0
      a, b = scene.objects
      centroids = [np.nonzero(masks[o.colour])[axis].mean() for o in (a, b)]
      if a.colour != b.colour:
        assert centroids[0] < centroids[1], path.name
    if scene.kind == 'overlap':  # the front object is whole, the back one partly hidden
      visible = [_visible_share(scene, obj, masks[obj.colour]) for obj in scene.objects]
      assert visible[1] > 0.8 and visible[0] < visible[1] + 0.02, (path.name, visible)
    checked[scene.kind] += 1
  assert set(checked) == set(scenes.KINDS)


def test_no_caption_that_ignores_the_image_scores_well():
  # A captions-only model can at best emit one fixed caption: none must score near a captioner.
  drawn = _scenes(300, seed=7)
  references = [[c.split() for c in captions] for _, captions, _ in drawn[:150]]
  candidates = sorted({c for _, captions, _ in drawn[150:] for c in captions})
  best = max(bleu_score.corpus_bleu(references, [c.split()] * len(references)) for c in candidates)
  assert best < 0.2


def test_vocabulary_has_a_long_tail():
  words = collections.Counter(w for _, captions, _ in _scenes(600, seed=3) for c in captions for w in c.split())
  assert len(words) >= 80
  assert set(scenes.COLOURS) <= set(words)
  # Rare words: some seen in fewer than 1% of the captions.
  assert sum(1 for n in words.values() if n < 0.01 * 600 * scenes.CAPTIONS_PER_IMAGE) >= 5


def test_command_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'components.ingestion.shapes_dataset', '--output_dir', str(tmp_path),
       '--num_images', '6', '--image_size', '48', '--dataset', SCENES, '--layout', shapes_dataset.KARPATHY],
      check=True, capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parents[1])
  assert '"images": 6' in result.stdout
  jpeg = (tmp_path / shapes_dataset.KARPATHY_IMAGE_DIR / shapes_dataset.image_id(5, dataset=SCENES)).read_bytes()
  assert Image.open(io.BytesIO(jpeg)).size == (48, 48)


def test_an_unknown_dataset_is_refused(tmp_path):
  with pytest.raises(ValueError, match='dataset must be one of'):
    shapes_dataset.generate(str(tmp_path), num_images=2, dataset='flowers')


def test_the_local_runner_trains_scenes_with_its_settings():
  # Imported here: local_run imports TFX, which local_runner defers until its log is open.
  from components import config as config_lib
  from pipeline.local import run as local_run
  from pipeline.local import runner as local_runner
  dataset = config_lib.EMBEDDED_DATASETS[SCENES]
  transform, encoder, trainer, evaluation = local_run.run_configs(local_runner._parse_args(['--dataset', SCENES]))
  assert (transform, evaluation) == (dataset.transform, dataset.evaluation)
  assert dataset.image_size == encoder.input_size == trainer.image_size == IMAGE_SIZE
  assert (encoder.pooling, trainer.decoder) == ('flatten', 'show_and_tell')
