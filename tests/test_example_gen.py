"""Tests of ImageCaptionExampleGen on small generated folders, clean and broken.

The executor's Do runs for real (Beam DirectRunner, in memory); the TFRecords
and the reject report are read back and checked against the input files.
"""

import collections
import glob
import json
import os
import pathlib
import struct
from typing import Dict, List
import zlib

import pytest
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs

from components import names
from components.ingestion import example_gen
from components.ingestion import flickr8k
from components.ingestion import layouts
from components.ingestion import rules
from components.ingestion import shapes_dataset
from pipeline import beam_args
from testing import executors
from testing import ingestion

NUM_IMAGES = 40
IMAGE_SIZE = 32
TOKEN_FILE = 'Flickr8k.token.txt'
BOM = b'\xef\xbb\xbf'


# --- helpers -----------------------------------------------------------------


def _generate(root: pathlib.Path, layout: str) -> pathlib.Path:
  shapes_dataset.generate(str(root), NUM_IMAGES, IMAGE_SIZE, seed=1,
                          layout=layout)
  return root


def _run(input_base: pathlib.Path, out: pathlib.Path):
  """Runs the executor's Do; returns (examples, report) artifacts."""
  return executors.run_example_gen(str(input_base), str(out))


def _official_captions(root: pathlib.Path) -> Dict[str, List[str]]:
  captions = collections.defaultdict(list)
  for line in (root / TOKEN_FILE).read_text().splitlines():
    key, caption = line.split('\t')
    captions[key.split('#')[0]].append(caption)
  return captions


def _non_blank_lines(path: pathlib.Path) -> int:
  return sum(1 for line in path.read_bytes().splitlines() if line.strip())


def _split_ids(root: pathlib.Path) -> Dict[str, List[str]]:
  return {
      split: (root / name).read_text().split()
      for split, name in flickr8k.SPLIT_FILES.items()
  }


# --- clean folders -----------------------------------------------------------


def test_clean_official_folder_is_written_completely(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  examples, report = _run(root, tmp_path / 'out')

  splits = ingestion.read_all(examples)
  captions = _official_captions(root)
  expected_ids = _split_ids(root)
  for split in names.SPLITS:
    assert sorted(splits[split]) == sorted(expected_ids[split])
    for image_id, (image, written_captions) in splits[split].items():
      path = root / shapes_dataset.OFFICIAL_IMAGE_DIR / image_id
      assert image == path.read_bytes()
      assert written_captions == captions[image_id]
  rejects, summary = ingestion.read_report(report)
  assert rejects == []
  assert summary['layout'] == flickr8k.OFFICIAL
  ingestion.assert_reconciles(splits, rejects, summary, set(captions),
                              caption_lines=NUM_IMAGES * 5)
  assert report.get_int_custom_property('written_images') == NUM_IMAGES
  assert report.get_int_custom_property('rejected_images') == 0


def test_kaggle_folder_with_split_files_in_text_dir_uses_them(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.KAGGLE)
  official = _generate(tmp_path / 'official', shapes_dataset.OFFICIAL)
  (root / flickr8k.TEXT_DIR).mkdir()
  for name in flickr8k.SPLIT_FILES.values():
    (root / flickr8k.TEXT_DIR / name).write_bytes((official / name).read_bytes())
  examples, report = _run(root, tmp_path / 'out')

  splits = ingestion.read_all(examples)
  expected_ids = _split_ids(official)
  for split in names.SPLITS:
    assert sorted(splits[split]) == sorted(expected_ids[split])
  rejects, summary = ingestion.read_report(report)
  assert rejects == []
  assert summary['layout'] == flickr8k.KAGGLE
  ingestion.assert_reconciles(splits, rejects, summary,
                              set(_official_captions(official)),
                              caption_lines=NUM_IMAGES * 5)


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

  train = root / flickr8k.SPLIT_FILES[names.TRAIN_SPLIT]
  test = root / flickr8k.SPLIT_FILES[names.DEMO_SPLIT]
  train_ids = train.read_text().split()
  assert ids[6] in train_ids and ids[7] in train_ids
  train.write_text(''.join(f'{i}\n' for i in train_ids if i != ids[6]))
  test.write_text(test.read_text() + f'{ids[7]}\n')

  image_reasons = {
      ids[0]: rules.NOT_AN_IMAGE,
      ids[1]: rules.NOT_AN_IMAGE,
      ids[2]: rules.NO_VALID_CAPTION,
      ids[6]: rules.IN_NO_SPLIT,
      ids[7]: rules.IN_TWO_SPLITS,
      ids[8]: rules.NO_VALID_CAPTION,
      'ghost.jpg': rules.MISSING_IMAGE,
  }
  caption_rejects = sorted(
      [(ids[3], rules.EMPTY_CAPTION), (ids[4], rules.NOT_UTF8),
       ('', rules.MALFORMED_LINE)] +
      [(ids[8], rules.EMPTY_CAPTION)] * 5)
  expected_captions = dict(captions)
  expected_captions[ids[3]] = captions[ids[3]][1:]
  expected_captions[ids[4]] = captions[ids[4]][:1] + captions[ids[4]][2:]
  return image_reasons, caption_rejects, expected_captions, malformed_line


def test_threaded_runs_write_the_same_files_byte_for_byte(tmp_path):
  """The local runner's threads (pipeline/beam_args.py): each thread writes its
  own shard, and two runs write the same shards, so a seeded run repeats."""
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  written = []
  for run in range(2):
    examples, _ = executors.run_example_gen(str(root), str(tmp_path / f'out{run}'),
                                            beam_args=beam_args.direct_thread_beam_args(2))
    files = sorted(glob.glob(os.path.join(examples.uri, 'Split-*', '*.gz')))
    written.append({os.path.relpath(path, examples.uri): pathlib.Path(path).read_bytes() for path in files})
    assert sum(map(len, ingestion.read_all(examples).values())) == NUM_IMAGES
  assert written[0] == written[1]
  # Both threads wrote: two shards per split.
  assert sorted(written[0]) == [f'Split-{split}/data_tfrecord-0000{shard}-of-00002.gz'
                                for split in sorted(names.SPLITS) for shard in range(2)]


def test_broken_official_folder_yields_reconciled_reject_report(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  split_ids = _split_ids(root)
  image_reasons, caption_rejects, expected_captions, malformed_line = (
      _break_official(root))
  examples, report = _run(root, tmp_path / 'out')

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert ingestion.image_reasons(rejects) == image_reasons
  assert sorted((r['id'], r['reason']) for r in rejects
                if r['level'] == rules.CAPTION_LEVEL) == caption_rejects
  malformed = [r for r in rejects if r['reason'] == rules.MALFORMED_LINE]
  assert [(r['file'], r['line']) for r in malformed] == [(TOKEN_FILE,
                                                          malformed_line)]
  decode_details = [
      r['detail'] for r in rejects if r['reason'] == rules.NOT_AN_IMAGE]
  assert all(decode_details), 'decode rejects must say why'

  image_dir = root / shapes_dataset.OFFICIAL_IMAGE_DIR
  for split in names.SPLITS:
    assert sorted(splits[split]) == sorted(
        set(split_ids[split]) - set(image_reasons))
    for image_id, (image, captions) in splits[split].items():
      assert image == (image_dir / image_id).read_bytes()
      assert captions == expected_captions[image_id]

  ingestion.assert_reconciles(splits, rejects, summary,
                              set(os.listdir(image_dir)) | {'ghost.jpg'},
                              caption_lines=_non_blank_lines(root / TOKEN_FILE))
  assert summary['caption_lines']['repaired'] == {rules.DUPLICATE_CAPTION: 1}
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

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert summary['layout'] == flickr8k.KAGGLE
  assert ingestion.image_reasons(rejects) == {
      ids[0]: rules.NOT_AN_IMAGE,
      ids[1]: rules.NO_VALID_CAPTION,
      'ghost.jpg': rules.MISSING_IMAGE,
  }
  assert [(r['id'], r['reason'], r['line']) for r in rejects
          if r['level'] == rules.CAPTION_LEVEL] == [
              (ids[3], rules.NOT_UTF8, len(broken) - 2)]
  assert summary['caption_lines']['repaired'] == {rules.DUPLICATE_CAPTION: 1}
  for split, written in splits.items():
    for image_id, (image, captions) in written.items():
      assert rules.hash_split(image_id) == split
      assert image == (image_dir / image_id).read_bytes()
      extra = [f'{original[ids[2]][0]}, quoted'] if image_id == ids[2] else []
      assert captions == original[image_id] + extra
  ingestion.assert_reconciles(splits, rejects, summary, set(ids) | {'ghost.jpg'},
                              caption_lines=len(broken) - 1)


def test_non_flickr_folder_fails_at_once_saying_what_was_expected(tmp_path):
  (tmp_path / 'data' / 'photos').mkdir(parents=True)
  (tmp_path / 'data' / 'labels.csv').write_text('a,b\n')
  with pytest.raises(layouts.LayoutError) as error:
    _run(tmp_path / 'data', tmp_path / 'out')
  message = str(error.value)
  for expected in ('Flicker8k_Dataset', TOKEN_FILE, 'Flickr_8k.trainImages.txt',
                   'Images/', 'captions.txt', 'image,caption',  # Flickr8k
                   'flickr30k_images/', 'results.csv',  # Flickr30k
                   'annotations/captions_train2014.json', 'val2014/',  # COCO
                   'dataset_coco.json', 'dataset_flickr30k.json'):  # Karpathy
    assert expected in message
  assert 'labels.csv' in message and 'photos' in message  # what was found
  assert not (tmp_path / 'out' / 'examples').exists() or not glob.glob(
      str(tmp_path / 'out' / 'examples' / '*' / '*.gz'))


# --- byte-order marks, oversized images, empty splits ---------------------------


def test_byte_order_marks_are_dropped_in_both_flickr8k_layouts(tmp_path):
  official = _generate(tmp_path / 'official', shapes_dataset.OFFICIAL)
  for name in [TOKEN_FILE, *flickr8k.SPLIT_FILES.values()]:
    (official / name).write_bytes(BOM + (official / name).read_bytes())
  kaggle = _generate(tmp_path / 'kaggle', shapes_dataset.KAGGLE)
  captions_file = kaggle / shapes_dataset.KAGGLE_CAPTIONS_FILE
  captions_file.write_bytes(BOM + captions_file.read_bytes())
  for root in (official, kaggle):
    examples, report = _run(root, tmp_path / 'out' / root.name)
    splits = ingestion.read_all(examples)
    rejects, summary = ingestion.read_report(report)
    assert rejects == []
    assert sum(images for images in summary['images']['written'].values()) == NUM_IMAGES
    ids = {shapes_dataset.image_id(i) for i in range(NUM_IMAGES)}
    ingestion.assert_reconciles(splits, rejects, summary, ids, caption_lines=NUM_IMAGES * 5)


def _png_header(width: int, height: int) -> bytes:
  """A PNG (8-bit RGB) whose header claims width x height, followed by one
  row of pixel data only: what a header-only check reads, without the
  megabytes a real image that size costs (it does not decode)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data)))
  ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  idat = zlib.compress(bytes(1 + 3 * width))
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat) + chunk(b'IEND', b'')


def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  image_dir = root / shapes_dataset.OFFICIAL_IMAGE_DIR
  ids = sorted(os.listdir(image_dir))
  (image_dir / ids[5]).write_bytes(_png_header(10_000, 5_001))  # just over 50 megapixels
  (image_dir / ids[6]).write_bytes(_png_header(10_000, 5_000))  # at the limit, but no pixel data
  examples, report = _run(root, tmp_path / 'out')

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert names.MAX_IMAGE_PIXELS == 50_000_000  # the serving limit this test is about
  assert ingestion.image_reasons(rejects) == {
      ids[5]: rules.IMAGE_TOO_LARGE, ids[6]: rules.NOT_AN_IMAGE}
  too_large = [r for r in rejects if r['reason'] == rules.IMAGE_TOO_LARGE]
  assert too_large[0]['detail'] == (
      '10000x5001 = 50010000 pixels, over the limit of 50000000')
  ingestion.assert_reconciles(splits, rejects, summary, set(ids), caption_lines=NUM_IMAGES * 5)


def test_everything_rejected_fails_at_once_naming_the_report(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  (root / TOKEN_FILE).write_bytes(b'')
  with pytest.raises(example_gen.EmptySplitError) as error:
    _run(root, tmp_path / 'out')
  report_dir = tmp_path / 'out' / 'rejects'
  assert str(report_dir / names.REJECTS_FILE) in str(error.value)
  assert 'after the text checks' in str(error.value)
  assert not glob.glob(str(tmp_path / 'out' / 'examples' / '*' / '*.gz'))
  rejects = [json.loads(line) for line in (report_dir / names.REJECTS_FILE).read_text().splitlines()]
  assert {r['reason'] for r in rejects} == {rules.NO_VALID_CAPTION}
  assert len(rejects) == NUM_IMAGES
  summary = json.loads((report_dir / names.INGESTION_SUMMARY_FILE).read_text())
  assert summary['images']['total_rejected'] == NUM_IMAGES and summary['reconciled']


def test_a_split_emptied_by_the_image_checks_fails_naming_the_report(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  image_dir = root / shapes_dataset.OFFICIAL_IMAGE_DIR
  demo_ids = _split_ids(root)[names.DEMO_SPLIT]
  for image_id in demo_ids:
    (image_dir / image_id).write_bytes(b'not an image')
  with pytest.raises(example_gen.EmptySplitError, match='demo.*after the image checks') as error:
    _run(root, tmp_path / 'out')
  assert str(tmp_path / 'out' / 'rejects' / names.REJECTS_FILE) in str(error.value)
  report_dir = tmp_path / 'out' / 'rejects'
  rejects = [json.loads(line) for line in (report_dir / names.REJECTS_FILE).read_text().splitlines()]
  summary = json.loads((report_dir / names.INGESTION_SUMMARY_FILE).read_text())
  assert ingestion.image_reasons(rejects) == {i: rules.NOT_AN_IMAGE for i in demo_ids}
  assert summary['images']['written'][names.DEMO_SPLIT] == 0 and summary['reconciled']


@pytest.mark.parametrize('rejected_images', [0, 1])
def test_empty_split_message_says_what_the_report_holds(tmp_path, rejected_images):
  """Three images of a Kaggle file with a byte-order mark are too few for every hash split.

  The message names the empty split(s) and the report, and claims no rejected
  image the report does not hold: it once said "Why every image was rejected"
  when none was.
  """
  root = _generate(tmp_path / 'data', shapes_dataset.KAGGLE)
  captions_file = root / shapes_dataset.KAGGLE_CAPTIONS_FILE
  header, *lines = captions_file.read_bytes().splitlines()
  ids = sorted({line.split(b',', 1)[0].decode() for line in lines})[:3]
  kept = ids[rejected_images:]  # an image without captions is rejected by the text checks
  lines = [line for line in lines if line.split(b',', 1)[0].decode() in kept]
  captions_file.write_bytes(BOM + b'\n'.join([header, *lines]) + b'\n')
  for path in (root / shapes_dataset.KAGGLE_IMAGE_DIR).iterdir():
    if path.name not in ids:
      path.unlink()

  with pytest.raises(example_gen.EmptySplitError) as error:
    _run(root, tmp_path / 'out')

  message = str(error.value)
  report_dir = tmp_path / 'out' / 'rejects'
  rejects = [json.loads(line) for line in (report_dir / names.REJECTS_FILE).read_text().splitlines()]
  summary = json.loads((report_dir / names.INGESTION_SUMMARY_FILE).read_text())
  assert ingestion.image_reasons(rejects) == {i: rules.NO_VALID_CAPTION for i in ids[:rejected_images]}
  assert summary['images']['total_rejected'] == rejected_images and summary['reconciled']
  empty = [split for split in names.SPLITS if split not in {rules.hash_split(i) for i in kept}]
  assert empty and message.startswith(f'Split(s) {", ".join(empty)} hold no image after the text checks')
  assert 'every image' not in message and 'rejected (if any)' in message
  assert str(report_dir / names.REJECTS_FILE) in message
  assert str(report_dir / names.INGESTION_SUMMARY_FILE) in message


# --- text pass only (no Beam) --------------------------------------------------


def test_official_layout_variants_are_detected(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  (root / shapes_dataset.OFFICIAL_IMAGE_DIR).rename(root / 'Flickr8k_Dataset')
  (root / flickr8k.TEXT_DIR).mkdir()
  for name in [TOKEN_FILE, *flickr8k.SPLIT_FILES.values()]:
    (root / name).rename(root / flickr8k.TEXT_DIR / name)
  dataset = layouts.read_dataset(str(root))
  assert dataset.layout.name == flickr8k.OFFICIAL
  assert len(dataset.records) == NUM_IMAGES and not dataset.rejects


@pytest.mark.parametrize('damage, expected', [
    (lambda root: (root / flickr8k.SPLIT_FILES['eval']).unlink(),
     'Flickr_8k.devImages.txt not found'),
    (lambda root: (root / TOKEN_FILE).unlink(), f'image folder but no {TOKEN_FILE}'),
])
def test_incomplete_official_folder_names_the_missing_file(
    tmp_path, damage, expected):
  root = _generate(tmp_path / 'data', shapes_dataset.OFFICIAL)
  damage(root)
  with pytest.raises(layouts.LayoutError, match=expected):
    layouts.read_dataset(str(root))


def test_kaggle_captions_without_header_fail(tmp_path):
  root = _generate(tmp_path / 'data', shapes_dataset.KAGGLE)
  captions_file = root / shapes_dataset.KAGGLE_CAPTIONS_FILE
  captions_file.write_text(captions_file.read_text().split('\n', 1)[1])
  with pytest.raises(layouts.LayoutError, match='header'):
    layouts.read_dataset(str(root))


def test_hash_split_is_deterministic_in_official_proportion():
  ids = [f'{i:010d}_{i * 7919 % 65536:04x}.jpg' for i in range(16000)]
  counts = collections.Counter(rules.hash_split(i) for i in ids)
  assert [rules.hash_split(i) for i in ids[:100]] == [
      rules.hash_split(i) for i in ids[:100]]
  assert abs(counts[names.TRAIN_SPLIT] - 12000) < 300
  assert abs(counts[names.EVAL_SPLIT] - 2000) < 200
  assert abs(counts[names.DEMO_SPLIT] - 2000) < 200


# --- component and driver ------------------------------------------------------


def test_component_declares_examples_and_reject_report(tmp_path):
  component = example_gen.ImageCaptionExampleGen(input_base=str(tmp_path))
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
        executors.node_parameters(names.EXAMPLE_GEN, data_root=str(root)), None, None)
    return properties['input_fingerprint']

  before = fingerprint()
  assert fingerprint() == before
  image = root / shapes_dataset.OFFICIAL_IMAGE_DIR / shapes_dataset.image_id(3)
  image.write_bytes(image.read_bytes() + b'\0')
  assert fingerprint() != before
