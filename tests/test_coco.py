"""Tests of the ExampleGen on generated MS COCO 2014 folders, clean and broken.

The executor runs in-process (testing/ingestion.py); the TFRecords are read
back split by split and the reject report is reconciled with the JSON files.
"""
import json
import os
import pathlib
from typing import Dict, List

import pytest

from components import names
from components.ingestion import coco
from components.ingestion import karpathy
from components.ingestion import layouts
from components.ingestion import rules
from components.ingestion import shapes_dataset
from testing import executors
from testing import ingestion

NUM_IMAGES = 40
IMAGE_SIZE = 32
BOM = b'\xef\xbb\xbf'
TRAIN_FILE, TRAIN_DIR = coco.SETS['train']
VAL_FILE, VAL_DIR = coco.SETS['val']


def _generate(root: pathlib.Path) -> pathlib.Path:
  shapes_dataset.generate(str(root), NUM_IMAGES, IMAGE_SIZE, seed=3, layout=shapes_dataset.COCO)
  return root


def _load(root: pathlib.Path, name: str) -> dict:
  return json.loads((root / coco.ANNOTATIONS_DIR / name).read_text())


def _captions(data: dict) -> Dict[str, List[str]]:
  file_names = {image['id']: image['file_name'] for image in data['images']}
  captions = {name: [] for name in file_names.values()}
  for annotation in data['annotations']:
    captions[file_names[annotation['image_id']]].append(annotation['caption'])
  return captions


def test_clean_folder_without_karpathy_file_splits_coco_val_by_hash(tmp_path):
  root = _generate(tmp_path / 'data')
  train, val = _captions(_load(root, TRAIN_FILE)), _captions(_load(root, VAL_FILE))
  val_file = root / coco.ANNOTATIONS_DIR / VAL_FILE
  val_file.write_bytes(BOM + val_file.read_bytes())
  examples, report = executors.run_example_gen(str(root), str(tmp_path / 'out'))

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert rejects == [] and summary['layout'] == coco.COCO
  assert sorted(splits[names.TRAIN_SPLIT]) == sorted(train)
  for split in (names.EVAL_SPLIT, names.DEMO_SPLIT):
    assert sorted(splits[split]) == sorted(
        i for i in val if rules.hash_split(i, coco.VAL_HASH_BUCKETS) == split)
  for split, written in splits.items():
    folder = root / (TRAIN_DIR if split == names.TRAIN_SPLIT else VAL_DIR)
    for image_id, (image, captions) in written.items():
      assert image == (folder / image_id).read_bytes()
      assert captions == {**train, **val}[image_id]
  ingestion.assert_reconciles(splits, rejects, summary, set(train) | set(val),
                              caption_lines=NUM_IMAGES * 5)


def _write_karpathy(root: pathlib.Path, train: dict, val: dict) -> Dict[str, str]:
  """dataset_coco.json: COCO train -> train, COCO val -> val / test / restval
  in turn; returns id -> the pipeline split with restval in train."""
  entries, expected = [], {}
  for image_id in sorted(train):
    entries.append({'filepath': TRAIN_DIR, 'filename': image_id, 'split': 'train'})
    expected[image_id] = names.TRAIN_SPLIT
  for n, image_id in enumerate(sorted(val)):
    split = ('val', 'test', 'restval')[n % 3]
    entries.append({'filepath': VAL_DIR, 'filename': image_id, 'split': split,
                    'sentences': [{'raw': 'ignored: captions come from COCO'}]})
    expected[image_id] = {'val': names.EVAL_SPLIT, 'test': names.DEMO_SPLIT,
                          'restval': names.TRAIN_SPLIT}[split]
  (root / karpathy.SPLIT_FILE_NAMES[2]).write_text(json.dumps({'images': entries, 'dataset': 'coco'}))
  return expected


def test_broken_folder_with_karpathy_splits_is_reconciled(tmp_path):
  root = _generate(tmp_path / 'data')
  train_data, val_data = _load(root, TRAIN_FILE), _load(root, VAL_FILE)
  train, val = _captions(train_data), _captions(val_data)
  expected_split = _write_karpathy(root, train, val)
  train_ids = sorted(train)
  # Broken: a file missing, a truncated image, an image with every caption
  # dropped, an annotation of an unknown image, a malformed annotation and
  # image entry, a caption with bytes that are not UTF-8, a file no split
  # file lists, an image in both COCO files.
  os.remove(root / TRAIN_DIR / train_ids[0])
  jpeg = root / TRAIN_DIR / train_ids[1]
  jpeg.write_bytes(jpeg.read_bytes()[:-300])
  (root / TRAIN_DIR / 'COCO_train2014_999999999999.jpg').write_bytes(
      (root / TRAIN_DIR / train_ids[5]).read_bytes())
  numeric = {image['file_name']: image['id'] for image in train_data['images']}
  annotations = [a for a in train_data['annotations'] if a['image_id'] != numeric[train_ids[2]]]
  annotations += [{'image_id': 123456, 'id': 1, 'caption': 'no such image'},
                  {'image_id': numeric[train_ids[3]], 'id': 2}]
  train_data['annotations'] = annotations
  train_data['images'].append({'id': 77, 'width': 1})
  val_data['images'].append(next(i for i in train_data['images'] if i['file_name'] == train_ids[4]))
  next(a for a in annotations if a.get('image_id') == numeric[train_ids[3]])['caption'] = 'LATIN1'
  (root / coco.ANNOTATIONS_DIR / TRAIN_FILE).write_bytes(
      json.dumps(train_data).encode().replace(b'LATIN1', b'caf\xe9 in Latin-1'))
  (root / coco.ANNOTATIONS_DIR / VAL_FILE).write_text(json.dumps(val_data))
  examples, report = executors.run_example_gen(str(root), str(tmp_path / 'out'))

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert ingestion.image_reasons(rejects) == {
      train_ids[0]: rules.MISSING_IMAGE,
      train_ids[1]: rules.NOT_AN_IMAGE,
      train_ids[2]: rules.NO_VALID_CAPTION,
      'COCO_train2014_999999999999.jpg': rules.IN_NO_SPLIT,
  }
  train_path = os.path.join(coco.ANNOTATIONS_DIR, TRAIN_FILE)
  caption_rejects = ingestion.caption_rejects(rejects)
  assert [(i, reason) for i, reason, _, _ in caption_rejects] == sorted([
      ('', rules.UNKNOWN_IMAGE), ('', rules.MALFORMED_LINE), ('', rules.MALFORMED_LINE),
      (train_ids[3], rules.NOT_UTF8)])
  assert {f for _, _, f, _ in caption_rejects} == {train_path}
  unknown = [r for r in rejects if r['reason'] == rules.UNKNOWN_IMAGE]
  assert unknown[0]['detail'] == 'image_id 123456' and unknown[0]['line'] == len(annotations) - 1
  for split, written in splits.items():
    for image_id, (image, captions) in written.items():
      assert expected_split[image_id] == split
      folder = TRAIN_DIR if image_id.startswith('COCO_train') else VAL_DIR
      assert image == (root / folder / image_id).read_bytes()
      expected = train[image_id][1:] if image_id == train_ids[3] else {**train, **val}[image_id]
      assert captions == expected
  assert train_ids[4] in splits[names.TRAIN_SPLIT]  # listed by both COCO files, one Karpathy split
  input_ids = set(train) | set(val) | {'COCO_train2014_999999999999.jpg'}
  ingestion.assert_reconciles(splits, rejects, summary, input_ids,
                              caption_lines=len(annotations) + 1 + 5 * len(val))


def test_restval_split_is_configurable(tmp_path):
  root = _generate(tmp_path / 'data')
  train, val = _captions(_load(root, TRAIN_FILE)), _captions(_load(root, VAL_FILE))
  expected = _write_karpathy(root, train, val)
  restval = {i for n, i in enumerate(sorted(val)) if n % 3 == 2}
  for restval_split in names.SPLITS:
    dataset = layouts.read_dataset(str(root), restval_split=restval_split)
    assert not dataset.rejects
    assert {r.image_id: r.split for r in dataset.records} == {
        i: restval_split if i in restval else s for i, s in expected.items()}
  with pytest.raises(ValueError, match='restval_split'):
    layouts.read_dataset(str(root), restval_split='restval')


def test_unparseable_or_incomplete_coco_folders_fail_naming_the_file(tmp_path):
  root = _generate(tmp_path / 'data')
  val_file = root / coco.ANNOTATIONS_DIR / VAL_FILE
  val_file.write_text(val_file.read_text()[:-40])  # cut short
  with pytest.raises(layouts.LayoutError, match=f'{val_file}: not valid JSON between bytes'):
    layouts.read_dataset(str(root))
  os.rename(root / VAL_DIR, tmp_path / 'elsewhere')
  with pytest.raises(layouts.LayoutError, match='incomplete COCO folder.*val2014'):
    layouts.read_dataset(str(root))
