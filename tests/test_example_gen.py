"""Tests of Flickr8kExampleGen on small generated folders, clean and broken.

The executor's Do runs for real (Beam DirectRunner, in memory); the TFRecords
and the reject report are read back and checked against the input files.
"""

import collections
import glob
import json
import os
import pathlib
from typing import Dict, List, Tuple

import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs

from components import names
from components.ingestion import example_gen
from components import features
from components.ingestion import flickr8k
from components.ingestion import shapes_dataset
from testing import executors

NUM_IMAGES = 40
IMAGE_SIZE = 32
TOKEN_FILE = 'Flickr8k.token.txt'

Split = Dict[str, Tuple[bytes, List[str]]]  # id -> (image bytes, captions)


# --- helpers -----------------------------------------------------------------


def _generate(root: pathlib.Path, layout: str) -> pathlib.Path:
  shapes_dataset.generate(str(root), NUM_IMAGES, IMAGE_SIZE, seed=1,
                          layout=layout)
  return root


def _run(input_base: pathlib.Path, out: pathlib.Path):
  """Runs the executor's Do; returns (examples, report) artifacts."""
  return executors.run_example_gen(str(input_base), str(out))


def _read_split(examples, split: str) -> Split:
  files = glob.glob(os.path.join(examples.uri, f'Split-{split}', '*.gz'))
  assert files, f'no TFRecord shards for split {split}'
  result = {}
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    assert len(feature[features.IMAGE_ID_KEY].bytes_list.value) == 1
    assert len(feature[features.IMAGE_KEY].bytes_list.value) == 1
    image_id = feature[features.IMAGE_ID_KEY].bytes_list.value[0].decode()
    assert image_id not in result, f'{image_id} written twice'
    result[image_id] = (
        feature[features.IMAGE_KEY].bytes_list.value[0],
        [c.decode('utf-8') for c in
         feature[features.CAPTIONS_KEY].bytes_list.value])
  return result


def _read_all(examples) -> Dict[str, Split]:
  assert sorted(json.loads(examples.split_names)) == sorted(features.SPLITS)
  splits = {split: _read_split(examples, split) for split in features.SPLITS}
  ids = [i for split in splits.values() for i in split]
  assert len(ids) == len(set(ids)), 'an id is written to two splits'
  return splits


def _read_report(report) -> Tuple[List[dict], dict]:
  with open(os.path.join(report.uri, names.REJECTS_FILE)) as f:
    rejects = [json.loads(line) for line in f]
  with open(os.path.join(report.uri, names.INGESTION_SUMMARY_FILE)) as f:
    summary = json.load(f)
  return rejects, summary


def _official_captions(root: pathlib.Path) -> Dict[str, List[str]]:
  captions = collections.defaultdict(list)
  for line in (root / TOKEN_FILE).read_text().splitlines():
    key, caption = line.split('\t')
    captions[key.split('#')[0]].append(caption)
  return captions


def _split_ids(root: pathlib.Path) -> Dict[str, List[str]]:
  return {
      split: (root / name).read_text().split()
      for split, name in flickr8k.SPLIT_FILES.items()
  }


def _image_reasons(rejects: List[dict]) -> Dict[str, str]:
  image_rejects = [r for r in rejects if r['level'] == flickr8k.IMAGE_LEVEL]
  reasons = {r['id']: r['reason'] for r in image_rejects}
  assert len(reasons) == len(image_rejects), 'an id is rejected twice'
  return reasons


def _assert_reconciles(splits: Dict[str, Split], rejects: List[dict],
                       summary: dict, input_ids: set):
  """Every input id is in exactly one split or the image rejects."""
  written = {i for split in splits.values() for i in split}
  rejected = set(_image_reasons(rejects))
  assert not written & rejected
  assert written | rejected == input_ids
  images = summary['images']
  assert images['input'] == len(input_ids)
  assert images['written'] == {s: len(splits[s]) for s in features.SPLITS}
  assert images['total_written'] == len(written)
  assert images['total_rejected'] == len(rejected)
  assert images['rejected'] == dict(collections.Counter(
      r['reason'] for r in rejects if r['level'] == flickr8k.IMAGE_LEVEL))
  lines = summary['caption_lines']
  assert lines['written'] == sum(
      len(c) for split in splits.values() for _, c in split.values())
  assert lines['input'] == (
      lines['written'] + sum(lines['repaired'].values()) +
      sum(lines['rejected'].values()) + lines['dropped_with_rejected_image'])
  assert summary['reconciled'] is True


# --- clean folders -----------------------------------------------------------


def test_clean_official_folder_is_written_completely(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  examples, report = _run(root, tmp_path / 'out')

  splits = _read_all(examples)
  captions = _official_captions(root)
  expected_ids = _split_ids(root)
  for split in features.SPLITS:
    assert sorted(splits[split]) == sorted(expected_ids[split])
    for image_id, (image, written_captions) in splits[split].items():
      path = root / shapes_dataset.OFFICIAL_IMAGE_DIR / image_id
      assert image == path.read_bytes()
      assert written_captions == captions[image_id]
  rejects, summary = _read_report(report)
  assert rejects == []
  assert summary['layout'] == flickr8k.OFFICIAL
  _assert_reconciles(splits, rejects, summary, set(captions))
  assert report.get_int_custom_property('written_images') == NUM_IMAGES
  assert report.get_int_custom_property('rejected_images') == 0


def test_kaggle_folder_with_split_files_in_text_dir_uses_them(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.KAGGLE)
  official = _generate(tmp_path / 'official', shapes_dataset.OFFICIAL)
  (root / flickr8k.TEXT_DIR).mkdir()
  for name in flickr8k.SPLIT_FILES.values():
    (root / flickr8k.TEXT_DIR / name).write_bytes((official / name).read_bytes())
  examples, report = _run(root, tmp_path / 'out')

  splits = _read_all(examples)
  expected_ids = _split_ids(official)
  for split in features.SPLITS:
    assert sorted(splits[split]) == sorted(expected_ids[split])
  rejects, summary = _read_report(report)
  assert rejects == []
  assert summary['layout'] == flickr8k.KAGGLE
  _assert_reconciles(splits, rejects, summary,
                     set(_official_captions(official)))


# --- broken folders ----------------------------------------------------------


def _break_official(root: pathlib.Path):
  """Damages a generated official folder; returns what the report must say."""
  image_dir = root / shapes_dataset.OFFICIAL_IMAGE_DIR
  ids = sorted(os.listdir(image_dir))
  jpeg = (image_dir / ids[0]).read_bytes()
  (image_dir / ids[0]).write_bytes(jpeg[:len(jpeg) // 2])  # truncated JPEG
  (image_dir / ids[1]).write_bytes(b'a text file named .jpg\n')

  captions = _official_captions(root)
  lines = []
  for raw in (root / TOKEN_FILE).read_bytes().splitlines():
    key, caption = raw.split(b'\t')
    image_id, n = key.decode().split('#')
    if image_id == ids[2]:
      continue  # image without captions
    if image_id == ids[3] and n == '0':
      raw = key + b'\t   '  # empty caption
    if image_id == ids[4] and n == '1':
      raw = key + b'\t\xff\xfe not utf-8'
    if image_id == ids[8]:
      raw = key + b'\t'  # every caption empty
    if image_id == ids[9] and n == '3':
      raw = key + b'\t  ' + caption.replace(b' ', b'  \t ') + b'  '
    lines.append(raw)
    if image_id == ids[5] and n == '2':
      lines.append(raw)  # exact duplicate line
  lines.append(b'')  # blank line, skipped
  lines.append(b'ghost.jpg#0\ta caption of a missing image')
  lines.append(b'a line without a tab')
  malformed_line = len(lines)
  (root / TOKEN_FILE).write_bytes(b'\n'.join(lines) + b'\n')

  train = root / flickr8k.SPLIT_FILES[features.TRAIN_SPLIT]
  test = root / flickr8k.SPLIT_FILES[features.DEMO_SPLIT]
  train_ids = train.read_text().split()
  assert ids[6] in train_ids and ids[7] in train_ids
  train.write_text(''.join(f'{i}\n' for i in train_ids if i != ids[6]))
  test.write_text(test.read_text() + f'{ids[7]}\n')

  image_reasons = {
      ids[0]: flickr8k.NOT_AN_IMAGE,
      ids[1]: flickr8k.NOT_AN_IMAGE,
      ids[2]: flickr8k.NO_VALID_CAPTION,
      ids[6]: flickr8k.IN_NO_SPLIT,
      ids[7]: flickr8k.IN_TWO_SPLITS,
      ids[8]: flickr8k.NO_VALID_CAPTION,
      'ghost.jpg': flickr8k.MISSING_IMAGE,
  }
  caption_rejects = sorted(
      [(ids[3], flickr8k.EMPTY_CAPTION), (ids[4], flickr8k.NOT_UTF8),
       ('', flickr8k.MALFORMED_LINE)] +
      [(ids[8], flickr8k.EMPTY_CAPTION)] * 5)
  expected_captions = dict(captions)
  expected_captions[ids[3]] = captions[ids[3]][1:]
  expected_captions[ids[4]] = captions[ids[4]][:1] + captions[ids[4]][2:]
  return image_reasons, caption_rejects, expected_captions, malformed_line


def test_broken_official_folder_yields_reconciled_reject_report(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  split_ids = _split_ids(root)
  image_reasons, caption_rejects, expected_captions, malformed_line = (
      _break_official(root))
  examples, report = _run(root, tmp_path / 'out')

  splits = _read_all(examples)
  rejects, summary = _read_report(report)
  assert _image_reasons(rejects) == image_reasons
  assert sorted((r['id'], r['reason']) for r in rejects
                if r['level'] == flickr8k.CAPTION_LEVEL) == caption_rejects
  malformed = [r for r in rejects if r['reason'] == flickr8k.MALFORMED_LINE]
  assert [(r['file'], r['line']) for r in malformed] == [(TOKEN_FILE,
                                                          malformed_line)]
  decode_details = [
      r['detail'] for r in rejects if r['reason'] == flickr8k.NOT_AN_IMAGE]
  assert all(decode_details), 'decode rejects must say why'

  image_dir = root / shapes_dataset.OFFICIAL_IMAGE_DIR
  for split in features.SPLITS:
    assert sorted(splits[split]) == sorted(
        set(split_ids[split]) - set(image_reasons))
    for image_id, (image, captions) in splits[split].items():
      assert image == (image_dir / image_id).read_bytes()
      assert captions == expected_captions[image_id]

  _assert_reconciles(splits, rejects, summary,
                     set(os.listdir(image_dir)) | {'ghost.jpg'})
  assert summary['caption_lines']['repaired'] == {flickr8k.DUPLICATE_CAPTION: 1}
  assert summary['caption_lines']['dropped_with_rejected_image'] == 21


def test_broken_kaggle_folder_uses_hash_splits_and_rejects(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.KAGGLE)
  image_dir = root / shapes_dataset.KAGGLE_IMAGE_DIR
  ids = sorted(os.listdir(image_dir))
  jpeg = (image_dir / ids[0]).read_bytes()
  (image_dir / ids[0]).write_bytes(jpeg[:-200])  # truncated JPEG
  captions_file = root / shapes_dataset.KAGGLE_CAPTIONS_FILE
  lines = captions_file.read_bytes().splitlines()
  original = collections.defaultdict(list)
  for raw in lines[1:]:
    image_id, caption = raw.decode().split(',', 1)
    original[image_id].append(caption)
  broken = [lines[0]]
  for raw in lines[1:]:
    image_id = raw.decode().split(',', 1)[0]
    if image_id == ids[1]:
      continue  # image without captions
    broken.append(raw)
  broken.append(f'{ids[2]},"{original[ids[2]][0]}, quoted"'.encode())
  broken.append(f'{ids[3]},'.encode() + b'\xc3\x28 bad utf-8')
  broken.append(broken[-3])  # duplicate line
  broken.append(b'ghost.jpg,a caption of a missing image')
  captions_file.write_bytes(b'\r\n'.join(broken) + b'\r\n')  # CRLF file
  examples, report = _run(root, tmp_path / 'out')

  splits = _read_all(examples)
  rejects, summary = _read_report(report)
  assert summary['layout'] == flickr8k.KAGGLE
  assert _image_reasons(rejects) == {
      ids[0]: flickr8k.NOT_AN_IMAGE,
      ids[1]: flickr8k.NO_VALID_CAPTION,
      'ghost.jpg': flickr8k.MISSING_IMAGE,
  }
  assert [(r['id'], r['reason'], r['line']) for r in rejects
          if r['level'] == flickr8k.CAPTION_LEVEL] == [
              (ids[3], flickr8k.NOT_UTF8, len(broken) - 2)]
  assert summary['caption_lines']['repaired'] == {flickr8k.DUPLICATE_CAPTION: 1}
  for split, written in splits.items():
    for image_id, (image, captions) in written.items():
      assert flickr8k.hash_split(image_id) == split
      assert image == (image_dir / image_id).read_bytes()
      extra = [f'{original[ids[2]][0]}, quoted'] if image_id == ids[2] else []
      assert captions == original[image_id] + extra
  _assert_reconciles(splits, rejects, summary, set(ids) | {'ghost.jpg'})


def test_non_flickr_folder_fails_at_once_saying_what_was_expected(tmp_path):
  (tmp_path / 'data' / 'photos').mkdir(parents=True)
  (tmp_path / 'data' / 'labels.csv').write_text('a,b\n')
  with pytest.raises(flickr8k.LayoutError) as error:
    _run(tmp_path / 'data', tmp_path / 'out')
  message = str(error.value)
  for expected in ('Flicker8k_Dataset', TOKEN_FILE, 'Flickr_8k.trainImages.txt',
                   'Images/', 'captions.txt', 'image,caption'):
    assert expected in message
  assert not (tmp_path / 'out' / 'examples').exists() or not glob.glob(
      str(tmp_path / 'out' / 'examples' / '*' / '*.gz'))


# --- text pass only (no Beam) --------------------------------------------------


def test_official_layout_variants_are_detected(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  (root / shapes_dataset.OFFICIAL_IMAGE_DIR).rename(root / 'Flickr8k_Dataset')
  (root / flickr8k.TEXT_DIR).mkdir()
  for name in [TOKEN_FILE, *flickr8k.SPLIT_FILES.values()]:
    (root / name).rename(root / flickr8k.TEXT_DIR / name)
  dataset = flickr8k.read_dataset(str(root))
  assert dataset.layout.name == flickr8k.OFFICIAL
  assert len(dataset.records) == NUM_IMAGES and not dataset.rejects


@pytest.mark.parametrize('damage, expected', [
    (lambda root: (root / flickr8k.SPLIT_FILES['eval']).unlink(),
     'Flickr_8k.devImages.txt not found'),
    (lambda root: (root / TOKEN_FILE).unlink(), f'{TOKEN_FILE} not found'),
])
def test_incomplete_official_folder_names_the_missing_file(
    tmp_path, damage, expected):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  damage(root)
  with pytest.raises(flickr8k.LayoutError, match=expected):
    flickr8k.read_dataset(str(root))


def test_kaggle_captions_without_header_fail(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.KAGGLE)
  captions_file = root / shapes_dataset.KAGGLE_CAPTIONS_FILE
  captions_file.write_text(captions_file.read_text().split('\n', 1)[1])
  with pytest.raises(flickr8k.LayoutError, match='header'):
    flickr8k.read_dataset(str(root))


def test_hash_split_is_deterministic_in_official_proportion():
  ids = [f'{i:010d}_{i * 7919 % 65536:04x}.jpg' for i in range(16000)]
  counts = collections.Counter(flickr8k.hash_split(i) for i in ids)
  assert [flickr8k.hash_split(i) for i in ids[:100]] == [
      flickr8k.hash_split(i) for i in ids[:100]]
  assert abs(counts[features.TRAIN_SPLIT] - 12000) < 300
  assert abs(counts[features.EVAL_SPLIT] - 2000) < 200
  assert abs(counts[features.DEMO_SPLIT] - 2000) < 200


# --- component and driver ------------------------------------------------------


def test_component_declares_examples_and_reject_report(tmp_path):
  component = example_gen.Flickr8kExampleGen(input_base=str(tmp_path))
  assert component.outputs[example_gen.EXAMPLES_KEY].type_name == (
      standard_artifacts.Examples.TYPE_NAME)
  assert component.outputs[example_gen.REJECTS_KEY].type_name == (
      example_gen.IngestionReport.TYPE_NAME)
  assert component.exec_properties[
      standard_component_specs.INPUT_BASE_KEY] == str(tmp_path)


def test_driver_fingerprint_covers_image_files(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  driver = example_gen.Driver(None)

  def fingerprint():
    properties = driver.resolve_exec_properties(
        example_gen.executor_exec_properties(str(root)), None, None)
    return properties['input_fingerprint']

  before = fingerprint()
  assert fingerprint() == before
  image = root / shapes_dataset.OFFICIAL_IMAGE_DIR / shapes_dataset.image_id(3)
  image.write_bytes(image.read_bytes() + b'\0')
  assert fingerprint() != before
