"""The validation, repair and reject rules every dataset layout shares.

A layout reader (flickr8k.py, flickr30k.py, coco.py, karpathy.py) only knows
where its files are and how a line or a JSON entry is spelled; it hands what
it finds to a `DatasetBuilder`, which applies the rules below the same way for
every layout and returns the accepted records and the rejects. The image bytes,
the expensive part, are read and verified later, in parallel, by the
ExampleGen's Beam pipeline (components/ingestion/example_gen.py).

An image id is the image's file name (e.g. "1000268201_693b08cb0e.jpg",
"COCO_val2014_000000391895.jpg"). The input ids are the union of the files in
the image folder(s), the ids named by caption lines or entries and the ids
named by split files.

Repair rules (the record is kept, the repair is counted):
  * a UTF-8 byte-order mark at the start of a text or JSON file is dropped
    (Windows editors write one; it is not part of the first id);
  * leading/trailing whitespace of ids and captions is stripped and runs of
    inner whitespace in captions become one space;
  * a caption whose (id, caption) equals an earlier one's, after the
    whitespace repair, is dropped ('duplicate caption');
  * blank lines in any text file are skipped (they carry no data);
  * a trailing carriage return (CRLF files) is removed;
  * layout-specific repairs, counted under their own names (Flickr30k's
    results.csv lines that lack the separator after the comment number).

Caption-level rejects (the line or entry is dropped, the image may survive):
  * 'malformed line' (a line or entry that does not parse), with its number;
  * 'caption is not valid UTF-8';
  * 'empty caption';
  * 'caption of an unknown image' (COCO: an annotation whose image_id is not
    in the file's images list, so no file name can be found for it).

Image-level rejects, one reason per id, checked in this order:
  * 'image file missing': named by captions or split files, no such file;
  * 'in more than one split': assigned to two splits;
  * 'in no split': assigned to no split (layouts with explicit splits);
  * 'no valid caption': no caption survived the rules above;
  * (in Beam) 'image file unreadable': the file cannot be read;
  * (in Beam) 'image too large': its header gives more than
    components.names.MAX_IMAGE_PIXELS pixels (the limit serving enforces);
  * (in Beam) 'not a decodable image': corrupt, truncated or not an image at
    all (tf.io.decode_image fails; its message is the reject's detail).

Reconciliation: every input id ends up in exactly one of the three splits or
the image rejects, and every caption line or entry is either written, dropped
as a duplicate, rejected, or dropped with its rejected image.
"""

import codecs
import collections
import dataclasses
import hashlib
import os
import re
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from components import names

# Image-level reject reasons.
MISSING_IMAGE = 'image file missing'
IN_TWO_SPLITS = 'in more than one split'
IN_NO_SPLIT = 'in no split'
NO_VALID_CAPTION = 'no valid caption'
UNREADABLE_IMAGE = 'image file unreadable'  # checked in Beam
IMAGE_TOO_LARGE = 'image too large'  # checked in Beam, from the header
NOT_AN_IMAGE = 'not a decodable image'  # checked in Beam
# Caption-level reject reasons.
MALFORMED_LINE = 'malformed line'
NOT_UTF8 = 'caption is not valid UTF-8'
EMPTY_CAPTION = 'empty caption'
UNKNOWN_IMAGE = 'caption of an unknown image'
# Repairs.
DUPLICATE_CAPTION = 'duplicate caption'

IMAGE_LEVEL = 'image'
CAPTION_LEVEL = 'caption'

# Hash split of layouts without split files: buckets [0, 6000) train,
# [6000, 7000) eval, [7000, 8000) demo, like Flickr8k's official
# 6000/1000/1000 split files.
HASH_SPLIT_BUCKETS = (
    (names.TRAIN_SPLIT, 6000),
    (names.EVAL_SPLIT, 1000),
    (names.DEMO_SPLIT, 1000),
)

_WHITESPACE = re.compile(r'\s+')
# Lone surrogates: what undecodable bytes become when a JSON file is read with
# errors='surrogateescape' (JSON strings cannot hold them otherwise).
_SURROGATE = re.compile('[\ud800-\udfff]')


class LayoutError(ValueError):
  """The folder is not a dataset in a known layout, or a file of it is
  unreadable as a whole (the message names the file)."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
  """An image that passed the text checks; its bytes are verified later."""
  image_id: str  # file name, e.g. '1000268201_693b08cb0e.jpg'
  path: str  # absolute path (or URL) of the image file
  file: str  # the same, relative to the dataset folder (for the report)
  split: str  # one of names.SPLITS
  captions: Tuple[str, ...]  # valid, whitespace-normalised, unique

  def to_json_dict(self) -> Dict[str, object]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json_dict(cls, value: Dict[str, object]) -> 'ImageRecord':
    return cls(**dict(value, captions=tuple(value['captions'])))


@dataclasses.dataclass(frozen=True)
class Reject:
  """One rejected image or caption line, as written to the reject report."""
  level: str  # IMAGE_LEVEL or CAPTION_LEVEL
  image_id: str  # '' when a malformed line names no id
  file: str  # offending file, relative to the dataset folder
  line: int  # 1-based line number in `file` (JSON: 1-based entry number); 0 for image rejects
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

  def sort_key(self) -> Tuple[str, str, int, str]:
    return (self.level, self.file, self.line, self.image_id)


@dataclasses.dataclass(frozen=True)
class Layout:
  """A detected dataset folder: which layout, and where its files are."""
  name: str  # one of components.ingestion.layouts.LAYOUTS
  root: str  # absolute path of the dataset folder
  files: Dict[str, str]  # role -> absolute path, as the layout's reader names them


@dataclasses.dataclass
class Dataset:
  """Outcome of reading the text files of a dataset folder."""
  layout: Layout
  records: List[ImageRecord]  # sorted by id
  rejects: List[Reject]
  num_input_ids: int
  num_caption_lines: int  # non-blank caption lines or entries (headers excluded)
  repairs: Dict[str, int]  # repair rule -> count


def isfile(path: str) -> bool:
  return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def isdir(path: str) -> bool:
  return tf.io.gfile.isdir(path)


def hash_split(image_id: str, buckets=HASH_SPLIT_BUCKETS) -> str:
  """Deterministic split of an id for layouts without split files."""
  total = sum(size for _, size in buckets)
  bucket = int(hashlib.sha256(image_id.encode('utf-8')).hexdigest(), 16) % total
  for split, size in buckets:
    if bucket < size:
      return split
    bucket -= size
  raise AssertionError('unreachable: buckets cover [0, total)')


def lines(path: str) -> Iterator[Tuple[int, bytes]]:
  """(1-based number, raw bytes) of the non-blank lines of a text file,
  streamed, without CR/LF and without a leading UTF-8 byte-order mark."""
  with tf.io.gfile.GFile(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      raw = raw.rstrip(b'\r\n')
      if number == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
      if raw.strip():
        yield number, raw


def lines_after_header(path: str, separator: str, header: Tuple[str, ...],
                       expects: str) -> Iterator[Tuple[int, bytes]]:
  """`lines(path)` after a first line that must be `header` (fields split at
  `separator`, compared stripped and lower-case); LayoutError naming the file
  and what the layout `expects` otherwise."""
  numbered = lines(path)
  first = next(numbered, None)
  found = first and tuple(
      f.strip().lower() for f in first[1].decode('utf-8', errors='replace').split(separator))
  if found != header:
    raise LayoutError(
        f'{path}: does not start with the header "{(separator + " ").join(header)}" ({expects})')
  return numbered


def decode_id(raw: Union[bytes, str]) -> str:
  """An id from a text field; '' (malformed) if it is not valid UTF-8."""
  if isinstance(raw, bytes):
    try:
      raw = raw.decode('utf-8')
    except UnicodeDecodeError:
      return ''
  return '' if _SURROGATE.search(raw) else raw.strip()


def count_by(items: Sequence[str]) -> Dict[str, int]:
  """Sorted histogram, for the reject report."""
  return dict(sorted(collections.Counter(items).items()))


class DatasetBuilder:
  """Collects what a layout reader finds and applies the shared rules.

  Memory: one entry per image id (its path, splits and valid captions); no
  image bytes. Readers stream their files into it line by line (or JSON
  entry by entry), so each text file is parsed once.
  """

  def __init__(self, layout: Layout):
    self.layout = layout
    self._files: Dict[str, str] = {}  # id -> path of an existing image file
    self._named: Dict[str, str] = {}  # id -> expected path, for ids named by text
    self._captions: Dict[str, List[str]] = collections.defaultdict(list)
    self._splits: Dict[str, List[str]] = collections.defaultdict(list)
    self._rejects: List[Reject] = []
    self._num_caption_lines = 0
    self._repairs = collections.Counter({DUPLICATE_CAPTION: 0})

  def relative(self, path: str) -> str:
    return os.path.relpath(path, self.layout.root)

  def add_image_folder(self, folder: str) -> List[str]:
    """Registers every file of `folder` as an image, its name as its id;
    returns those ids."""
    image_ids = []
    for name in tf.io.gfile.listdir(folder):
      path = os.path.join(folder, name)
      if isfile(path):
        self._files.setdefault(name, path)
        image_ids.append(name)
    return image_ids

  def name_image(self, image_id: str, path: str) -> None:
    """Records that a text file names `image_id`, expected at `path`."""
    self._named.setdefault(image_id, path)

  def assign_split(self, image_id: str, split: str) -> None:
    if split not in self._splits[image_id]:
      self._splits[image_id].append(split)

  def repair(self, rule: str) -> None:
    """Counts a layout-specific repair of a caption line."""
    self._repairs[rule] += 1

  def reject_line(self, path: str, number: int, reason: str,
                  image_id: str = '', detail: str = '') -> None:
    """A caption line or entry that is rejected (counts as an input line)."""
    self._num_caption_lines += 1
    self._rejects.append(Reject(CAPTION_LEVEL, image_id, self.relative(path),
                                number, reason, detail))

  def add_caption(self, path: str, number: int, image_id: str,
                  raw: Union[bytes, str]) -> None:
    """One caption line or entry of `path` for `image_id` ('' if unparsed)."""
    if not image_id:
      self.reject_line(path, number, MALFORMED_LINE)
      return
    if isinstance(raw, bytes):
      try:
        raw = raw.decode('utf-8')
      except UnicodeDecodeError:
        self.reject_line(path, number, NOT_UTF8, image_id)
        return
    elif _SURROGATE.search(raw):
      self.reject_line(path, number, NOT_UTF8, image_id)
      return
    caption = _WHITESPACE.sub(' ', raw).strip()
    if not caption:
      self.reject_line(path, number, EMPTY_CAPTION, image_id)
      return
    self._num_caption_lines += 1
    if caption in self._captions[image_id]:
      self._repairs[DUPLICATE_CAPTION] += 1
    else:
      self._captions[image_id].append(caption)

  def build(self, default_split: Optional[Callable[[str], str]] = None,
            default_folder: Optional[str] = None) -> Dataset:
    """Applies the image-level rules to every input id.

    Args:
      default_split: the split of an id no split file assigns (a hash);
        None: such an id is rejected as 'in no split'.
      default_folder: where an id named only by a split file is expected
        (for the 'image file missing' report); default: the dataset root.
    """
    named_ids = set(self._captions) | set(self._named) | set(self._splits)
    named_ids.update(r.image_id for r in self._rejects if r.image_id)
    input_ids = sorted(set(self._files) | named_ids)
    records, rejects = [], []
    for image_id in input_ids:
      path = self._files.get(image_id) or self._named.get(image_id) or (
          os.path.join(default_folder or self.layout.root, image_id))
      captions = tuple(self._captions.get(image_id, ()))
      splits = self._splits.get(image_id) or (
          [default_split(image_id)] if default_split else [])
      if image_id not in self._files:
        reason = MISSING_IMAGE
      elif len(splits) > 1:
        reason = IN_TWO_SPLITS
      elif not splits:
        reason = IN_NO_SPLIT
      elif not captions:
        reason = NO_VALID_CAPTION
      else:
        records.append(ImageRecord(image_id, path, self.relative(path),
                                   splits[0], captions))
        continue
      rejects.append(Reject(IMAGE_LEVEL, image_id, self.relative(path), 0,
                            reason, num_captions=len(captions)))
    return Dataset(
        layout=self.layout,
        records=records,
        rejects=self._rejects + rejects,
        num_input_ids=len(input_ids),
        num_caption_lines=self._num_caption_lines,
        repairs=dict(sorted(self._repairs.items())))
