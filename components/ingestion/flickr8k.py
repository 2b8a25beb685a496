"""Reads a Flickr8k-style folder into validated per-image records (no Beam).

The text files of Flickr8k are small (~40k caption lines), so they are parsed
once, in plain Python, into one record per image; only the image bytes, the
expensive part, are read and verified later, in parallel, by the ExampleGen's
Beam pipeline (components/ingestion/example_gen.py).

Accepted layouts (`detect_layout`); anything else fails at once, with a
message naming both:
  official  the Flickr8k distribution:
              Flicker8k_Dataset/<id>        images (Flickr8k_Dataset/ also accepted)
              Flickr8k.token.txt            "<id>#<n>\\t<caption>" lines
              Flickr_8k.trainImages.txt     ids of the train split  -> 'train'
              Flickr_8k.devImages.txt       ids of the dev split    -> 'eval'
              Flickr_8k.testImages.txt      ids of the test split   -> 'demo'
            the four text files at the folder's root or in Flickr8k_text/.
  kaggle    the Kaggle re-packaging:
              Images/<id>                   images
              captions.txt                  header "image,caption", then
                                            "<id>,<caption>" CSV lines
            split files as above, if present (root or Flickr8k_text/);
            otherwise splits come from a SHA-256 hash of the id, in the
            6000:1000:1000 proportion of the official splits.

An image id is the image's file name (e.g. "1000268201_693b08cb0e.jpg"). The
input ids are the union of the files in the image folder, the ids named by
caption lines and the ids named by split files.

Repair rules (the record is kept, the repair is counted):
  * leading/trailing whitespace of ids and captions is stripped and runs of
    inner whitespace in captions become one space;
  * a caption line whose (id, caption) equals an earlier line's, after the
    whitespace repair, is dropped ('duplicate caption');
  * blank lines in any text file are skipped (they carry no data);
  * a trailing carriage return (CRLF files) is removed.

Caption-level rejects (the line is dropped, the image may survive):
  * 'malformed line' (no tab / no "#<n>" suffix / no comma), with its number;
  * 'caption is not valid UTF-8';
  * 'empty caption'.

Image-level rejects, one reason per id, checked in this order:
  * 'image file missing': named by captions or split files, no such file;
  * 'in more than one split': listed by two split files;
  * 'in no split': listed by no split file (official splits only);
  * 'no valid caption': no caption line survived the rules above;
  * (in Beam) 'image file unreadable': the file cannot be read;
  * (in Beam) 'not a decodable image': corrupt, truncated or not an image at
    all (tf.io.decode_image fails; its message is the reject's detail).

Reconciliation: every input id ends up in exactly one of the three splits or
the image rejects, and every caption line is either written, dropped as a
duplicate, rejected, or dropped with its rejected image.
"""

import collections
import csv
import dataclasses
import hashlib
import os
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf

from components import features

OFFICIAL = 'official'
KAGGLE = 'kaggle'

OFFICIAL_IMAGE_DIRS = ('Flicker8k_Dataset', 'Flickr8k_Dataset')
TEXT_DIR = 'Flickr8k_text'
TOKEN_FILE = 'Flickr8k.token.txt'
SPLIT_FILES = {
    features.TRAIN_SPLIT: 'Flickr_8k.trainImages.txt',
    features.EVAL_SPLIT: 'Flickr_8k.devImages.txt',
    features.DEMO_SPLIT: 'Flickr_8k.testImages.txt',
}
KAGGLE_IMAGE_DIR = 'Images'
KAGGLE_CAPTIONS_FILE = 'captions.txt'
KAGGLE_HEADER = ('image', 'caption')
# Hash split of the Kaggle layout: buckets [0, 6000) train, [6000, 7000) eval,
# [7000, 8000) demo, like the official 6000/1000/1000 split files.
HASH_SPLIT_BUCKETS = (
    (features.TRAIN_SPLIT, 6000),
    (features.EVAL_SPLIT, 1000),
    (features.DEMO_SPLIT, 1000),
)

# Image-level reject reasons.
MISSING_IMAGE = 'image file missing'
IN_TWO_SPLITS = 'in more than one split'
IN_NO_SPLIT = 'in no split'
NO_VALID_CAPTION = 'no valid caption'
NOT_AN_IMAGE = 'not a decodable image'  # checked in Beam
UNREADABLE_IMAGE = 'image file unreadable'  # checked in Beam
# Caption-level reject reasons.
MALFORMED_LINE = 'malformed line'
NOT_UTF8 = 'caption is not valid UTF-8'
EMPTY_CAPTION = 'empty caption'
# Repairs.
DUPLICATE_CAPTION = 'duplicate caption'

IMAGE_LEVEL = 'image'
CAPTION_LEVEL = 'caption'

_TOKEN_KEY = re.compile(r'^(?P<id>.+)#(?P<n>\d+)$')
_WHITESPACE = re.compile(r'\s+')


class LayoutError(ValueError):
  """The folder is not a Flickr8k dataset in a known layout."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  """An image that passed the text checks; its bytes are verified later."""
  image_id: str  # file name, e.g. '1000268201_693b08cb0e.jpg'
  path: str  # absolute path of the image file
  file: str  # the same, relative to the dataset folder (for the report)
  split: str  # one of features.SPLITS
  captions: Tuple[str, ...]  # valid, whitespace-normalised, unique


@dataclasses.dataclass(frozen=True)
class Reject:
  """One rejected image or caption line, as written to the reject report."""
  level: str  # IMAGE_LEVEL or CAPTION_LEVEL
  image_id: str  # '' when a malformed line names no id
  file: str  # offending file, relative to the dataset folder
  line: int  # 1-based line number in `file`; 0 for image-level rejects
  reason: str  # one of the reason constants of this module
  detail: str = ''  # e.g. the decoder's error message
  num_captions: int = 0  # valid captions dropped with a rejected image

  def to_json_dict(self) -> Dict[str, object]:
    return {
        'level': self.level,
        'id': self.image_id,
        'file': self.file,
        'line': self.line,
        'reason': self.reason,
        'detail': self.detail,
    }


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where the files of a detected dataset are (absolute paths)."""
  name: str  # OFFICIAL or KAGGLE
  root: str
  image_dir: str
  captions_file: str
  split_files: Optional[Dict[str, str]]  # split -> path; None: hash split


@dataclasses.dataclass
class Dataset:
  """Outcome of reading the text files of a dataset folder."""
  layout: Layout
  records: List[ImageRecord]
  rejects: List[Reject]
  num_input_ids: int
  num_caption_lines: int  # non-blank caption lines (header excluded)
  repairs: Dict[str, int]  # repair rule -> count


def _isfile(path: str) -> bool:
  return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _find_text_file(root: str, name: str) -> Optional[str]:
  for folder in (root, os.path.join(root, TEXT_DIR)):
    path = os.path.join(folder, name)
    if _isfile(path):
      return path
  return None


def _expected_layouts_message(root: str, problem: str) -> str:
  return (
      f'{root!r} is not a Flickr8k dataset folder: {problem}. Expected either '
      f'the official layout ({OFFICIAL_IMAGE_DIRS[0]}/ or '
      f'{OFFICIAL_IMAGE_DIRS[1]}/ with the images, and {TOKEN_FILE}, '
      f'{", ".join(SPLIT_FILES.values())} at the root or in {TEXT_DIR}/) or '
      f'the Kaggle layout ({KAGGLE_IMAGE_DIR}/ with the images and '
      f'{KAGGLE_CAPTIONS_FILE} with an "image,caption" header).')


def detect_layout(root: str) -> Layout:
  """Finds the dataset files under `root`; raises LayoutError if none fit."""
  if not tf.io.gfile.isdir(root):
    raise LayoutError(_expected_layouts_message(root, 'no such folder'))
  if '://' not in root:  # object storage paths (gs://, s3://) are absolute already
    root = os.path.abspath(root)
  split_paths = {
      split: _find_text_file(root, name) for split, name in SPLIT_FILES.items()
  }
  found_splits = {s: p for s, p in split_paths.items() if p}

  official_dirs = [
      os.path.join(root, d) for d in OFFICIAL_IMAGE_DIRS
      if tf.io.gfile.isdir(os.path.join(root, d))
  ]
  if official_dirs:
    token_file = _find_text_file(root, TOKEN_FILE)
    if token_file is None:
      raise LayoutError(
          _expected_layouts_message(root, f'{TOKEN_FILE} not found'))
    if len(found_splits) != len(SPLIT_FILES):
      missing = [SPLIT_FILES[s] for s in SPLIT_FILES if s not in found_splits]
      raise LayoutError(_expected_layouts_message(
          root, f'split file(s) {", ".join(missing)} not found'))
    return Layout(OFFICIAL, root, official_dirs[0], token_file, found_splits)

  kaggle_dir = os.path.join(root, KAGGLE_IMAGE_DIR)
  kaggle_captions = os.path.join(root, KAGGLE_CAPTIONS_FILE)
  if tf.io.gfile.isdir(kaggle_dir) and _isfile(kaggle_captions):
    if found_splits and len(found_splits) != len(SPLIT_FILES):
      missing = [SPLIT_FILES[s] for s in SPLIT_FILES if s not in found_splits]
      raise LayoutError(_expected_layouts_message(
          root, f'some split files are present but {", ".join(missing)} '
          'is not (give all three or none)'))
    return Layout(KAGGLE, root, kaggle_dir, kaggle_captions,
                  found_splits or None)
  raise LayoutError(_expected_layouts_message(
      root, 'neither an official nor a Kaggle image folder with captions'))


def hash_split(image_id: str) -> str:
  """Deterministic split of an id for layouts without split files."""
  total = sum(size for _, size in HASH_SPLIT_BUCKETS)
  bucket = int(hashlib.sha256(image_id.encode('utf-8')).hexdigest(), 16) % total
  for split, size in HASH_SPLIT_BUCKETS:
    if bucket < size:
      return split
    bucket -= size
  raise AssertionError('unreachable: buckets cover [0, total)')


def _lines(path: str) -> Iterator[Tuple[int, bytes]]:
  """(1-based number, raw bytes) of the non-blank lines of a file."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      raw = raw.rstrip(b'\r\n')
      if raw.strip():
        yield number, raw


def _normalise(text: str) -> str:
  return _WHITESPACE.sub(' ', text).strip()


@dataclasses.dataclass(frozen=True)
class _CaptionLine:
  number: int
  image_id: str  # '' when malformed
  caption: Optional[str]  # None when the line is rejected
  reason: str = ''  # reject reason when caption is None


def _parse_token_line(number: int, raw: bytes) -> _CaptionLine:
  """Parses '<id>#<n>\\t<caption>' (official layout)."""
  key, tab, caption = raw.partition(b'\t')
  match = _TOKEN_KEY.match(key.decode('utf-8', errors='replace').strip())
  if not tab or not match or '\ufffd' in match.group('id'):
    return _CaptionLine(number, '', None, MALFORMED_LINE)
  return _decode_caption(number, match.group('id').strip(), caption)


def _parse_kaggle_line(number: int, raw: bytes) -> _CaptionLine:
  """Parses '<id>,<caption>' (Kaggle layout, CSV quoting allowed)."""
  image_id, comma, caption = raw.partition(b',')
  try:
    image_id = image_id.decode('utf-8').strip()
  except UnicodeDecodeError:
    return _CaptionLine(number, '', None, MALFORMED_LINE)
  if not comma:
    return _CaptionLine(number, '', None, MALFORMED_LINE)
  return _decode_caption(number, image_id, caption, csv_quoted=True)


def _decode_caption(number: int, image_id: str, raw: bytes,
                    csv_quoted: bool = False) -> _CaptionLine:
  if not image_id:
    return _CaptionLine(number, '', None, MALFORMED_LINE)
  try:
    caption = raw.decode('utf-8')
  except UnicodeDecodeError:
    return _CaptionLine(number, image_id, None, NOT_UTF8)
  if csv_quoted:  # captions containing commas are quoted in the Kaggle CSV
    caption = ','.join(next(csv.reader([caption]), []))
  caption = _normalise(caption)
  if not caption:
    return _CaptionLine(number, image_id, None, EMPTY_CAPTION)
  return _CaptionLine(number, image_id, caption)


def _read_caption_lines(layout: Layout) -> List[_CaptionLine]:
  lines = _lines(layout.captions_file)
  if layout.name == OFFICIAL:
    return [_parse_token_line(n, raw) for n, raw in lines]
  first = next(lines, None)
  header = None
  if first is not None:
    header = tuple(
        f.strip().lower()
        for f in first[1].decode('utf-8', errors='replace').split(','))
  if header != KAGGLE_HEADER:
    raise LayoutError(_expected_layouts_message(
        layout.root, f'{KAGGLE_CAPTIONS_FILE} does not start with the header '
        f'"image,caption"'))
  return [_parse_kaggle_line(n, raw) for n, raw in lines]


def _read_split_files(
    split_files: Dict[str, str]) -> Dict[str, List[str]]:
  """id -> the splits whose file lists it (an id may be listed twice)."""
  splits_of = collections.defaultdict(list)
  for split in features.SPLITS:
    for _, raw in _lines(split_files[split]):
      image_id = raw.decode('utf-8', errors='replace').strip()
      if split not in splits_of[image_id]:
        splits_of[image_id].append(split)
  return splits_of


def read_dataset(root: str) -> Dataset:
  """Parses and validates the text files of the dataset folder `root`.

  Returns accepted records (image bytes not yet verified) and rejects such
  that every input id is in exactly one of them.

  Raises:
    LayoutError: `root` is not a dataset in a known layout.
  """
  layout = detect_layout(root)

  def relative(path: str) -> str:
    return os.path.relpath(path, layout.root)

  captions_file = relative(layout.captions_file)

  image_files = {
      name for name in tf.io.gfile.listdir(layout.image_dir)
      if _isfile(os.path.join(layout.image_dir, name))
  }
  caption_lines = _read_caption_lines(layout)
  splits_of = (
      _read_split_files(layout.split_files) if layout.split_files else {})

  rejects: List[Reject] = []
  captions_of: Dict[str, List[str]] = collections.defaultdict(list)
  seen = set()
  repairs = {DUPLICATE_CAPTION: 0}
  for line in caption_lines:
    if line.caption is None:
      rejects.append(Reject(CAPTION_LEVEL, line.image_id, captions_file,
                            line.number, line.reason))
      continue
    if (line.image_id, line.caption) in seen:
      repairs[DUPLICATE_CAPTION] += 1
      continue
    seen.add((line.image_id, line.caption))
    captions_of[line.image_id].append(line.caption)

  named_ids = {line.image_id for line in caption_lines if line.image_id}
  input_ids = sorted(image_files | named_ids | set(splits_of))
  records: List[ImageRecord] = []
  for image_id in input_ids:
    path = os.path.join(layout.image_dir, image_id)
    captions = tuple(captions_of.get(image_id, ()))
    splits = (
        splits_of.get(image_id, [])
        if layout.split_files else [hash_split(image_id)])
    if image_id not in image_files:
      reason = MISSING_IMAGE
    elif len(splits) > 1:
      reason = IN_TWO_SPLITS
    elif not splits:
      reason = IN_NO_SPLIT
    elif not captions:
      reason = NO_VALID_CAPTION
    else:
      records.append(
          ImageRecord(image_id, path, relative(path), splits[0], captions))
      continue
    rejects.append(Reject(IMAGE_LEVEL, image_id, relative(path), 0, reason,
                          num_captions=len(captions)))
  return Dataset(
      layout=layout,
      records=records,
      rejects=rejects,
      num_input_ids=len(input_ids),
      num_caption_lines=len(caption_lines),
      repairs=repairs)


def count_by(items: Sequence[str]) -> Dict[str, int]:
  """Sorted histogram, for the reject report."""
  return dict(sorted(collections.Counter(items).items()))
