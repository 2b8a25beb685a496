"""Tests of the ExampleGen on generated Flickr30k folders (results.csv), clean and broken.

The executor runs in-process (testing/ingestion.py); the TFRecords are read
back split by split and the reject report is reconciled with the input files.
"""
import collections
import json
import os
import pathlib
from typing import Dict, List

import pytest

from components import names
from components.ingestion import flickr30k
from components.ingestion import karpathy
from components.ingestion import layouts
from components.ingestion import rules
from components.ingestion import shapes_dataset
from testing import executors
from testing import ingestion

NUM_IMAGES = 40
IMAGE_SIZE = 32
BOM = b'\xef\xbb\xbf'


def _generate(root: pathlib.Path) -> pathlib.Path:
  shapes_dataset.generate(str(root), NUM_IMAGES, IMAGE_SIZE, seed=2, layout=shapes_dataset.FLICKR30K)
  return root


def _results(root: pathlib.Path) -> Dict[str, List[str]]:
  captions = collections.defaultdict(list)
  for line in (root / flickr30k.RESULTS_FILE).read_text().splitlines()[1:]:
    image_id, _, caption = line.split('| ')
    captions[image_id].append(caption)
  return captions


def test_clean_folder_with_a_byte_order_mark_uses_hash_splits(tmp_path):
  root = _generate(tmp_path / 'data')
  captions = _results(root)
  results = root / flickr30k.RESULTS_FILE
  results.write_bytes(BOM + results.read_bytes())  # as Windows editors save it
  examples, report = executors.run_example_gen(str(root), str(tmp_path / 'out'))

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert rejects == [] and summary['layout'] == flickr30k.FLICKR30K
  image_dir = root / shapes_dataset.FLICKR30K_IMAGE_DIR
  for split, written in splits.items():
    assert sorted(written) == sorted(i for i in captions if rules.hash_split(i) == split)
    for image_id, (image, written_captions) in written.items():
      assert image == (image_dir / image_id).read_bytes()
      assert written_captions == captions[image_id]
  ingestion.assert_reconciles(splits, rejects, summary, set(captions),
                              caption_lines=NUM_IMAGES * 5)


def test_broken_folder_with_karpathy_splits_is_reconciled(tmp_path):
  root = _generate(tmp_path / 'data')
  captions = _results(root)
  ids = sorted(captions)
  image_dir = root / shapes_dataset.FLICKR30K_IMAGE_DIR
  # Karpathy's file: blocks of 28 train, 4 val, 4 test, 3 restval; ids[39] is
  # in no split, ids[0] in two.
  karpathy_splits = ['train'] * 28 + ['val'] * 4 + ['test'] * 4 + ['restval'] * 3
  entries = [{'filename': i, 'split': s, 'sentences': []} for i, s in zip(ids, karpathy_splits)]
  entries.append({'filename': ids[0], 'split': 'test', 'sentences': []})
  entries.append({'filename': 'ghost.jpg', 'split': 'train', 'sentences': []})
  (root / karpathy.SPLIT_FILE_NAMES[1]).write_text(json.dumps({'images': entries}))

  (image_dir / ids[1]).write_bytes((image_dir / ids[1]).read_bytes()[:100])  # truncated
  lines = (root / flickr30k.RESULTS_FILE).read_bytes().splitlines()
  broken = [lines[0]]
  for raw in lines[1:]:
    image_id, number, caption = raw.split(b'| ')
    if image_id.decode() == ids[2] and number == b'4':
      raw = image_id + b'| 4 ' + caption  # the known malformed line: no second separator
    if image_id.decode() == ids[3] and number == b'0':
      raw = image_id + b'| 0| \xe9t\xe9 in Latin-1'
    if image_id.decode() == ids[4]:
      continue  # an image without captions
    broken.append(raw)
  broken.append(b'no separators at all')
  broken.append(b'unknown.jpg| 0| a caption of an image that is not there')
  (root / flickr30k.RESULTS_FILE).write_bytes(b'\r\n'.join(broken) + b'\r\n')
  examples, report = executors.run_example_gen(str(root), str(tmp_path / 'out'))

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert ingestion.image_reasons(rejects) == {
      ids[0]: rules.IN_TWO_SPLITS,
      ids[1]: rules.NOT_AN_IMAGE,
      ids[4]: rules.NO_VALID_CAPTION,
      ids[39]: rules.IN_NO_SPLIT,
      'ghost.jpg': rules.MISSING_IMAGE,
      'unknown.jpg': rules.MISSING_IMAGE,
  }
  assert ingestion.caption_rejects(rejects) == [
      ('', rules.MALFORMED_LINE, flickr30k.RESULTS_FILE, len(broken) - 1),
      (ids[3], rules.NOT_UTF8, flickr30k.RESULTS_FILE, 1 + 3 * 5 + 1),
  ]
  assert summary['caption_lines']['repaired'] == {
      rules.DUPLICATE_CAPTION: 0, flickr30k.MISSING_SEPARATOR: 1}
  expected_split = dict(zip(ids, [names.TRAIN_SPLIT] * 28 + [names.EVAL_SPLIT] * 4 +
                            [names.DEMO_SPLIT] * 4 + [names.TRAIN_SPLIT] * 3))
  for split, written in splits.items():
    for image_id, (image, written_captions) in written.items():
      assert expected_split[image_id] == split
      assert image == (image_dir / image_id).read_bytes()
      expected = captions[image_id][1:] if image_id == ids[3] else captions[image_id]
      assert written_captions == expected  # the repaired line's caption included
  ingestion.assert_reconciles(splits, rejects, summary, set(ids) | {'ghost.jpg', 'unknown.jpg'},
                              caption_lines=len(broken) - 1)


def test_kaggle_nesting_is_accepted_and_incomplete_folders_name_what_is_missing(tmp_path):
  root = _generate(tmp_path / 'data')
  image_dir = root / shapes_dataset.FLICKR30K_IMAGE_DIR
  image_dir.rename(tmp_path / 'images')
  image_dir.mkdir()
  (tmp_path / 'images').rename(image_dir / shapes_dataset.FLICKR30K_IMAGE_DIR)
  (root / flickr30k.RESULTS_FILE).rename(image_dir / flickr30k.RESULTS_FILE)
  dataset = layouts.read_dataset(str(root))
  assert dataset.layout.name == flickr30k.FLICKR30K
  assert len(dataset.records) == NUM_IMAGES and not dataset.rejects

  (image_dir / flickr30k.RESULTS_FILE).write_text('image,caption\n')
  with pytest.raises(layouts.LayoutError, match='does not start with the header'):
    layouts.read_dataset(str(root))
  os.rename(image_dir, tmp_path / 'elsewhere')
  (root / flickr30k.RESULTS_FILE).write_text('image_name| comment_number| comment\n')
  with pytest.raises(layouts.LayoutError, match='no flickr30k_images/ image folder'):
    layouts.read_dataset(str(root))
