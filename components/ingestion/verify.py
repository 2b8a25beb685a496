"""The ExampleGen's Beam stages: what runs on the workers, free of TFX imports.

Input: a work folder holding records-NNNNN.jsonl files, one rules.ImageRecord
per line (written by `write_records` in the driver). Output:
  <split_uri>/<file_prefix>-NNNNN-of-NNNNN.gz   gzipped TFRecord shards, one
      serialized tf.Example per image in the layout of components/records.py,
      written by the worker that checked the images (no reshuffle of image bytes)
      and numbered by `order_shards` in the order of their first image id
  <work folder>/image_rejects*.jsonl     the image-level rejects found here
  <work folder>/tally.json               {split: [images written, captions written]}
read back in the driver by `read_results`.

This module imports no TFX: Beam's workers unpickle its DoFns by importing
it, and importing TFX (with tensorflow-text, tfx-bsl, ...) would add seconds
to every worker's start-up.
"""

import dataclasses
import json
import os
import re
import struct
from typing import Any, Dict, Iterator, List, Tuple, Union
import zlib

import apache_beam as beam
from apache_beam.io import filesystem
from apache_beam.io import fileio
from apache_beam.options.value_provider import StaticValueProvider
import google_crc32c
import tensorflow as tf

from components import names
from components import progress
from components import records
from components.ingestion import image_check
from components.ingestion import rules

# The progress line's description.
PROGRESS_DESCRIPTION = 'checking images'
_REJECTED_TAG = 'rejected'
_TALLY_TAG = 'tally'
# Files in the executor's work folder.
_RECORDS_PREFIX = 'records'
# The records are spread over at most this many files, the units the runner
# hands its workers: enough to keep every worker busy, few enough that the
# runner's own buffers (a file name each) stay small for any dataset size.
_MAX_RECORD_FILES = 256
_IMAGE_REJECTS_PREFIX = 'image_rejects'
_TALLY_FILE = 'tally.json'
# Deflate level of the gzipped TFRecords. The records are encoded images,
# already compressed: level 6 (zlib's default, Beam's WriteToTFRecord) saves
# ~1.5% of the bytes for ~15x the CPU of storing them (level 0), which would
# cost as much as decoding the image. The files stay gzip, read as before.
_GZIP_LEVEL = 0


class _ReadAndVerifyImage(beam.DoFn):
  """ImageRecord -> serialized tf.Example in its split's output, or a Reject.

  Also emits (split, num_captions) to the tally output for the summary, and
  reports records checked of `total` (components/progress.py): one count per
  process, shared by the instances on its threads.
  """

  def __init__(self, progress_key: str, total: int):
    self._progress_key, self._total = progress_key, total

  def setup(self):
    self._tracker = progress.shared_tracker(self._progress_key, self._total, PROGRESS_DESCRIPTION)

  def process(
      self, record: rules.ImageRecord
  ) -> Iterator[Union[bytes, beam.pvalue.TaggedOutput]]:
    yield from self._verify(record)
    self._tracker.advance()

  @staticmethod
  def _verify(record: rules.ImageRecord) -> Iterator[Union[bytes, beam.pvalue.TaggedOutput]]:
    checked = image_check.read_and_check(record.path)
    if not checked.ok:
      yield beam.pvalue.TaggedOutput(
          _REJECTED_TAG,
          rules.Reject(rules.IMAGE_LEVEL, record.image_id, record.file, 0, checked.reason,
                       checked.detail, len(record.captions)))
      return
    example = records.image_example(checked.image, record.image_id, record.captions)
    # deterministic: the same bytes on every run (the feature map's order is otherwise arbitrary)
    yield beam.pvalue.TaggedOutput(record.split, example.SerializeToString(deterministic=True))
    yield beam.pvalue.TaggedOutput(_TALLY_TAG, (record.split, len(record.captions)))


def _masked_crc32c(data: bytes) -> bytes:
  """The masked CRC-32C of TFRecord framing (tensorflow/core/lib/hash/crc32c.h)."""
  crc = google_crc32c.value(data)
  return struct.pack('<I', (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff)


class _GzipTFRecordSink(fileio.FileSink):
  """Writes serialized records as a gzipped TFRecord file at _GZIP_LEVEL.

  The framing of tf.io.TFRecordWriter: uint64 length, masked CRC of the
  length, the bytes, masked CRC of the bytes (little-endian).
  """

  def create_metadata(self, destination: str, full_file_name: str) -> fileio.FileMetadata:
    return fileio.FileMetadata(mime_type='application/octet-stream',
                               compression_type=filesystem.CompressionTypes.UNCOMPRESSED)

  def open(self, fh) -> None:
    self._fh = fh
    self._gzip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

  def write(self, record: bytes) -> None:
    length = struct.pack('<Q', len(record))
    self._fh.write(self._gzip.compress(
        length + _masked_crc32c(length) + record + _masked_crc32c(record)))

  def flush(self) -> None:
    """Ends the gzip stream: WriteToFiles calls this once, right before it
    closes the file."""
    self._fh.write(self._gzip.flush())
    self._fh.flush()


class _TallyFn(beam.CombineFn):
  """(split, num_captions) per written image -> {split: [images, captions]}."""

  def create_accumulator(self) -> Dict[str, List[int]]:
    return {split: [0, 0] for split in names.SPLITS}

  def add_input(self, accumulator, element: Tuple[str, int]):
    split, num_captions = element
    accumulator[split][0] += 1
    accumulator[split][1] += num_captions
    return accumulator

  def merge_accumulators(self, accumulators):
    merged = self.create_accumulator()
    for accumulator in accumulators:
      for split, (images, captions) in accumulator.items():
        merged[split][0] += images
        merged[split][1] += captions
    return merged

  def extract_output(self, accumulator):
    return accumulator


def _write_json(value: Any, path: str) -> None:
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(value))


def write_records(image_records: List[rules.ImageRecord], work_dir: str) -> None:
  """Writes the Beam pipeline's input into `work_dir`: the records in order,
  in up to _MAX_RECORD_FILES files of consecutive records."""
  per_file = max(1, -(-len(image_records) // _MAX_RECORD_FILES))
  for index, start in enumerate(range(0, len(image_records), per_file)):
    path = os.path.join(work_dir, f'{_RECORDS_PREFIX}-{index:05d}.jsonl')
    with tf.io.gfile.GFile(path, 'w') as f:
      for record in image_records[start:start + per_file]:
        f.write(json.dumps(record.to_json_dict()) + '\n')


def _read_record_file(path: str) -> Iterator[rules.ImageRecord]:
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      yield rules.ImageRecord.from_json_dict(json.loads(line))


def verify_and_write(pipeline: beam.Pipeline, work_dir: str, split_uris: Dict[str, str],
                     file_prefix: str, total: int) -> None:
  """The Beam part: records file -> verified images in TFRecord shards.

  Writes to `work_dir` the image rejects (JSON lines, with num_captions) and
  the tally {split: [images, captions]} of what was written. `total`: the
  records in `work_dir`, for the progress lines (their key is `work_dir`;
  progress.release_tracker(work_dir) after the pipeline).
  """
  # Only the file names pass through the runner; each worker streams the
  # records of its files straight into the image checks and its own shards.
  # One Reshuffle, fed by a single worker in file order: the runner then hands
  # the files out round-robin in that order, the same on every run (Create's
  # own reshuffle would let two workers feed it in whatever order they finish).
  record_files = sorted(tf.io.gfile.glob(os.path.join(work_dir, f'{_RECORDS_PREFIX}-*.jsonl')))
  outputs = (
      pipeline
      | 'ListRecordFiles' >> beam.Create(record_files, reshuffle=False)
      | 'SpreadRecordFiles' >> beam.Reshuffle()
      | 'ReadRecords' >> beam.FlatMap(_read_record_file)
      | 'ReadAndVerifyImages' >> beam.ParDo(_ReadAndVerifyImage(work_dir, total)).with_outputs(
          _REJECTED_TAG, _TALLY_TAG, *names.SPLITS))
  for split in names.SPLITS:  # each worker writes its own shards: no reshuffle
    _ = outputs[split] | f'WriteSplit[{split}]' >> fileio.WriteToFiles(
        split_uris[split], sink=_GzipTFRecordSink(),
        file_naming=fileio.default_file_naming(file_prefix, '.gz'),
        temp_directory=StaticValueProvider(str, os.path.join(work_dir, f'tmp-{split}')))
  _ = (outputs[_REJECTED_TAG]
       | 'RejectsToJson' >> beam.Map(lambda r: json.dumps(dataclasses.asdict(r)))
       | 'WriteImageRejects' >> beam.io.WriteToText(
           os.path.join(work_dir, _IMAGE_REJECTS_PREFIX), file_name_suffix='.jsonl'))
  _ = (outputs[_TALLY_TAG]
       | 'Tally' >> beam.CombineGlobally(_TallyFn())
       | 'WriteTally' >> beam.Map(_write_json, os.path.join(work_dir, _TALLY_FILE)))


def order_shards(split_uri: str) -> None:
  """Renumbers a split's shards in the order of their first image id.

  Each worker writes its part of the records, and the runner hands the
  workers the same parts on every run, but it numbers the shards in the order
  the workers finish. Readers concatenate shards in name order, so without
  this a seeded run could see the same records in another order.
  """
  paths = tf.io.gfile.glob(os.path.join(split_uri, '*'))
  first_ids = {}
  for path in paths:
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP').take(1):
      first_ids[path] = records.parse_image_example(record.numpy(), path).image_id
  ordered = sorted(paths, key=lambda path: first_ids.get(path, ''))
  staged = [path + '.renumbering' for path in ordered]
  for path, temporary in zip(ordered, staged):
    tf.io.gfile.rename(path, temporary)
  for index, (path, temporary) in enumerate(zip(ordered, staged)):
    name = re.sub(r'-\d{5}-of-(\d{5})', f'-{index:05d}-of-\\1', os.path.basename(path))
    tf.io.gfile.rename(temporary, os.path.join(split_uri, name))


def read_results(work_dir: str) -> Tuple[Dict[str, List[int]], List[rules.Reject]]:
  """(tally, image rejects) that `verify_and_write` left in `work_dir`."""
  with tf.io.gfile.GFile(os.path.join(work_dir, _TALLY_FILE)) as f:
    tally = json.load(f)
  rejects = []
  for path in tf.io.gfile.glob(os.path.join(work_dir, _IMAGE_REJECTS_PREFIX + '*')):
    with tf.io.gfile.GFile(path) as f:
      rejects.extend(rules.Reject(**json.loads(line)) for line in f)
  return tally, rejects
