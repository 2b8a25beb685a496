"""Runs the ExampleGen executor in-process and reads back what it wrote.

For the ingestion tests of every layout (tests/test_example_gen.py,
tests/test_<layout>.py) and bench/ingestion.py: the executor's Do runs for
real (Beam DirectRunner), then the TFRecords are read split by split and the
reject report is checked against them, so no count is taken on trust.
"""
import collections
import glob
import json
import os
from typing import Dict, List, Set, Tuple

import tensorflow as tf
from tfx.types import artifact
from tfx.types import standard_artifacts

from components import names
from components import records
from components.ingestion import rules

Split = Dict[str, Tuple[bytes, List[str]]]  # id -> (image bytes, captions)
def read_split(examples: standard_artifacts.Examples, split: str) -> Split:
  files = glob.glob(os.path.join(examples.uri, f'Split-{split}', '*.gz'))
  assert files, f'no TFRecord shards for split {split}'
  result = {}
  for serialized in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    example = records.parse_image_example(serialized.numpy(), f'a record of split {split}')
    assert example.image_id not in result, f'{example.image_id} written twice'
    result[example.image_id] = (example.image, example.references)
  return result


def read_all(examples: standard_artifacts.Examples) -> Dict[str, Split]:
  """{split: Split} for the three splits; no id in two of them."""
  assert sorted(json.loads(examples.split_names)) == sorted(names.SPLITS)
  splits = {split: read_split(examples, split) for split in names.SPLITS}
  ids = [i for split in splits.values() for i in split]
  assert len(ids) == len(set(ids)), 'an id is written to two splits'
  return splits


def read_report(report: artifact.Artifact) -> Tuple[List[dict], dict]:
  """(rejects.jsonl as dicts, summary.json)."""
  with open(os.path.join(report.uri, names.REJECTS_FILE)) as f:
    rejects = [json.loads(line) for line in f]
  with open(os.path.join(report.uri, names.INGESTION_SUMMARY_FILE)) as f:
    summary = json.load(f)
  return rejects, summary


def image_reasons(rejects: List[dict]) -> Dict[str, str]:
  """id -> reason of the image-level rejects; no id rejected twice."""
  image_rejects = [r for r in rejects if r['level'] == rules.IMAGE_LEVEL]
  reasons = {r['id']: r['reason'] for r in image_rejects}
  assert len(reasons) == len(image_rejects), 'an id is rejected twice'
  return reasons


def caption_rejects(rejects: List[dict]) -> List[Tuple[str, str, str, int]]:
  """Sorted (id, reason, file, line) of the caption-level rejects."""
  return sorted((r['id'], r['reason'], r['file'], r['line'])
                for r in rejects if r['level'] == rules.CAPTION_LEVEL)


def assert_reconciles(splits: Dict[str, Split], rejects: List[dict],
                      summary: dict, input_ids: Set[str], caption_lines: int):
  """Every input id is in exactly one split or the image rejects, and the
  summary's counts match the records and rejects read back; `caption_lines`
  is the number of caption lines (or entries) of the input files."""
  written = {i for split in splits.values() for i in split}
  rejected = set(image_reasons(rejects))
  assert not written & rejected
  assert written | rejected == input_ids
  images = summary['images']
  assert images['input'] == len(input_ids)
  assert images['written'] == {s: len(splits[s]) for s in names.SPLITS}
  assert images['total_written'] == len(written)
  assert images['total_rejected'] == len(rejected)
  assert images['not_read'] == 0
  assert images['rejected'] == dict(collections.Counter(
      r['reason'] for r in rejects if r['level'] == rules.IMAGE_LEVEL))
  lines = summary['caption_lines']
  assert lines['input'] == caption_lines
  assert lines['written'] == sum(
      len(c) for split in splits.values() for _, c in split.values())
  assert lines['rejected'] == dict(collections.Counter(
      r['reason'] for r in rejects if r['level'] == rules.CAPTION_LEVEL))
  assert lines['input'] == (
      lines['written'] + lines['repaired'].get(rules.DUPLICATE_CAPTION, 0) +
      sum(lines['rejected'].values()) + lines['dropped_with_rejected_image'])
  assert summary['reconciled'] is True
