"""Tests of the ExampleGen on a Karpathy split file with its images, and of
the streaming JSON reader the COCO and Karpathy readers share."""
import json
import pathlib

import pytest

from components import names
from components.ingestion import json_stream
from components.ingestion import karpathy
from components.ingestion import layouts
from components.ingestion import rules
from components.ingestion import shapes_dataset
from testing import executors
from testing import ingestion

NUM_IMAGES = 40
IMAGE_SIZE = 32
BOM = b'\xef\xbb\xbf'
SPLITS = {'train': names.TRAIN_SPLIT, 'val': names.EVAL_SPLIT, 'test': names.DEMO_SPLIT}


def _generate(root: pathlib.Path) -> pathlib.Path:
  shapes_dataset.generate(str(root), NUM_IMAGES, IMAGE_SIZE, seed=4, layout=shapes_dataset.KARPATHY)
  return root


def _split_file(root: pathlib.Path) -> pathlib.Path:
  return root / shapes_dataset.KARPATHY_SPLIT_FILE


def test_clean_folder_with_a_byte_order_mark_follows_the_split_file(tmp_path):
  root = _generate(tmp_path / 'data')
  entries = json.loads(_split_file(root).read_text())['images']
  _split_file(root).write_bytes(BOM + _split_file(root).read_bytes())
  examples, report = executors.run_example_gen(str(root), str(tmp_path / 'out'))

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert rejects == [] and summary['layout'] == karpathy.KARPATHY
  image_dir = root / shapes_dataset.KARPATHY_IMAGE_DIR
  for entry in entries:
    image, captions = splits[SPLITS[entry['split']]][entry['filename']]
    assert image == (image_dir / entry['filename']).read_bytes()
    assert captions == [s['raw'] for s in entry['sentences']]
  ingestion.assert_reconciles(splits, rejects, summary, {e['filename'] for e in entries},
                              caption_lines=NUM_IMAGES * 5)


def test_broken_split_file_is_reconciled(tmp_path):
  root = _generate(tmp_path / 'data')
  data = json.loads(_split_file(root).read_text())
  entries = data['images']
  ids = [e['filename'] for e in entries]
  entries[0]['split'] = 'holdout'  # no such split
  entries[1]['sentences'] = [{'raw': '   '}, {'tokens': ['no', 'raw']}, 'not an object']
  entries[2]['sentences'][0]['raw'] = 'LATIN1'
  entries[3]['sentences'].append(dict(entries[3]['sentences'][1]))  # a duplicate
  entries.append({'split': 'train', 'sentences': [{'raw': 'an entry without a filename'}]})
  entries.append({'filename': 'ghost.jpg', 'split': 'train', 'sentences': [{'raw': 'a ghost'}]})
  entries.append({'filename': ids[5], 'split': 'test', 'sentences': []})  # ids[5] in two splits
  _split_file(root).write_bytes(
      json.dumps(data).encode().replace(b'LATIN1', b'na\xefve in Latin-1'))
  examples, report = executors.run_example_gen(str(root), str(tmp_path / 'out'))

  splits = ingestion.read_all(examples)
  rejects, summary = ingestion.read_report(report)
  assert ingestion.image_reasons(rejects) == {
      ids[0]: rules.IN_NO_SPLIT,
      ids[1]: rules.NO_VALID_CAPTION,
      ids[5]: rules.IN_TWO_SPLITS,
      'ghost.jpg': rules.MISSING_IMAGE,
  }
  name = karpathy.SPLIT_FILE_NAMES[0]
  assert ingestion.caption_rejects(rejects) == sorted([
      ('', rules.MALFORMED_LINE, name, NUM_IMAGES + 1),
      (ids[1], rules.EMPTY_CAPTION, name, 2),
      (ids[1], rules.MALFORMED_LINE, name, 2),
      (ids[1], rules.MALFORMED_LINE, name, 2),
      (ids[2], rules.NOT_UTF8, name, 3),
  ])
  assert summary['caption_lines']['repaired'] == {rules.DUPLICATE_CAPTION: 1}
  for entry in entries[2:NUM_IMAGES]:
    if entry['filename'] == ids[5]:
      continue
    _, captions = splits[SPLITS[entry['split']]][entry['filename']]
    expected = [s['raw'] for s in entry['sentences'] if isinstance(s, dict) and 'raw' in s]
    expected = {ids[2]: expected[1:], ids[3]: expected[:-1]}.get(entry['filename'], expected)
    assert captions == expected, entry['filename']
  ingestion.assert_reconciles(splits, rejects, summary, set(ids) | {'ghost.jpg'},
                              # ids[1]: 3 sentences instead of 5; ids[3]: one more;
                              # the entry without a filename and the ghost: one each
                              caption_lines=NUM_IMAGES * 5 - 5 + 3 + 1 + 1 + 1)


def test_a_folder_with_two_split_files_or_no_images_fails_naming_them(tmp_path):
  root = _generate(tmp_path / 'data')
  (root / karpathy.SPLIT_FILE_NAMES[2]).write_text('{}')
  with pytest.raises(layouts.LayoutError, match='several Karpathy split files'):
    layouts.read_dataset(str(root))
  (root / karpathy.SPLIT_FILE_NAMES[2]).unlink()
  (root / shapes_dataset.KARPATHY_IMAGE_DIR).rename(tmp_path / 'elsewhere')
  with pytest.raises(layouts.LayoutError, match='no image folder'):
    layouts.read_dataset(str(root))


# --- json_stream -----------------------------------------------------------------


@pytest.mark.parametrize('chunk_bytes', [1, 3, 7, 1 << 20])
def test_json_array_entries_stream_across_chunk_boundaries(tmp_path, monkeypatch, chunk_bytes):
  monkeypatch.setattr(json_stream, '_CHUNK_BYTES', chunk_bytes)
  value = {'info': {'year': 2014}, 'images': [{'id': 123456789, 'name': 'caf\u00e9'}, {'id': 2}],
           'count': 9876543210, 'empty': [], 'annotations': [1.5, 'two', None, ['LATIN1']],
           'marks': ['\ufdd0\ue0e9 and \ufdd0\ufdd0 as the file holds them', {'\ufdd0': 'LATIN1'}]}
  path = tmp_path / 'a.json'
  path.write_bytes(BOM + json.dumps(value, indent=1, ensure_ascii=False).encode().replace(
      b'LATIN1', b'caf\xe9'))

  def entries(key):
    return list(json_stream.array_entries(str(path), key))

  assert entries('images') == [(1, {'id': 123456789, 'name': 'caf\u00e9'}), (2, {'id': 2})]
  # The byte that is not UTF-8 comes back as a lone surrogate, for the rules to reject.
  assert entries('annotations') == [(1, 1.5), (2, 'two'), (3, None), (4, ['caf\udce9'])]
  assert entries('marks') == [(1, value['marks'][0]), (2, {'\ufdd0': 'caf\udce9'})]
  assert entries('empty') == entries('count') == entries('missing') == []


@pytest.mark.parametrize('text, problem, where', [
    ('[1, 2]', "expected an object ('{'), found '['", ''),
    ('{"images": [{"id": 1} {"id": 2}]}', "after array element, I expect ',' or ']'",
     'between bytes 0 and 33'),
    ('{"images": [{"id": 1}', 'premature EOF', 'between bytes 21 and 21'),  # at the end
    ('{"a": tru}', 'invalid string in json text', 'between bytes 0 and 10'),
])
def test_json_array_entries_name_the_file_and_bytes_of_an_error(tmp_path, text, problem, where):
  path = tmp_path / 'bad.json'
  path.write_text(text)
  with pytest.raises(rules.LayoutError, match=f'{path}: not valid JSON') as error:
    list(json_stream.array_entries(str(path), 'images'))
  assert problem in str(error.value) and where in str(error.value)
