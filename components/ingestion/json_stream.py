"""Streams the entries of a top-level array of a large JSON file, with ijson.

MS COCO's captions_train2014.json (~70 MB) and Karpathy's dataset_coco.json
(~140 MB, a token list per sentence) cost gigabytes as Python objects when
loaded whole with json.load. Their useful parts are top-level arrays of small
objects ("images", "annotations"), so ijson (its C yajl2 backend) builds one
array entry at a time from 64 KB chunks: memory is one chunk plus one entry,
whatever the file's size.

What ijson does not do, and this module adds: bytes that are not UTF-8. ijson
refuses the whole file for one of them, while the rules reject only the caption
holding them, as the line-based readers do. So the bytes are decoded with
errors='surrogateescape' (a leading byte-order mark is dropped), each lone
surrogate that stands for an undecodable byte goes through ijson as a pair of
valid characters (the noncharacter _MARK, then a private-use character; a
_MARK in the file is doubled), and the entries' strings get the surrogates
back, for rules.DatasetBuilder to reject.
"""

import codecs
import re
from typing import Any, Iterator, Tuple

import ijson
import tensorflow as tf

from components.ingestion import rules

_CHUNK_BYTES = 64 * 1024  # ijson's default buffer; 1 MB parses 2 to 3 times slower
_WHITESPACE = ' \t\n\r'
# U+FDD0 is a Unicode noncharacter: no text means anything by it.
_MARK = '\ufdd0'
# surrogateescape turns byte 0xXY into U+DCXY; it travels as _MARK + U+E0XY.
_SURROGATE_OFFSET = 0xDC00 - 0xE000
_TO_ESCAPE = re.compile('[\udc80-\udcff\ufdd0]')
_ESCAPED = re.compile('\ufdd0(.)', re.DOTALL)


def _escape(match: re.Match) -> str:
  char = match[0]
  return _MARK + (_MARK if char == _MARK else chr(ord(char) - _SURROGATE_OFFSET))


def _unescape_char(match: re.Match) -> str:
  char = match[1]
  return _MARK if char == _MARK else chr(ord(char) + _SURROGATE_OFFSET)


def _unescape(value: Any) -> Any:
  """`value` with every string's escapes (see `_escape`) turned back into what the file held."""
  if isinstance(value, str):
    return _ESCAPED.sub(_unescape_char, value) if _MARK in value else value
  if isinstance(value, dict):
    return {_unescape(key): _unescape(item) for key, item in value.items()}
  if isinstance(value, list):
    return [_unescape(item) for item in value]
  return value


class _Source:
  """The file as ijson reads it (`read`): UTF-8 with the undecodable bytes escaped.

  Also remembers which bytes of the file the last read covered, where a parse
  error lies, and whether the file starts an object.
  """

  def __init__(self, f, path: str):
    self._f = f
    self._path = path
    self._decoder = codecs.getincrementaldecoder('utf-8-sig')(errors='surrogateescape')
    self._started = False
    self.escaped = False  # some text was escaped: the entries' strings need `_unescape`
    self.start = self.end = 0  # the bytes of the file the last read covered

  def read(self, size: int) -> bytes:
    text = ''
    while not text:  # a chunk may end inside a character; '' tells ijson the file ended
      chunk = self._f.read(size)
      self.start, self.end = self.end, self.end + len(chunk)
      text = self._decoder.decode(chunk, final=not chunk)
      if not chunk:
        break
    self._check_object_start(text)
    if _TO_ESCAPE.search(text):
      self.escaped, text = True, _TO_ESCAPE.sub(_escape, text)
    return text.encode('utf-8')

  def _check_object_start(self, text: str) -> None:
    """Fails unless the top-level value, once it starts, is an object."""
    stripped = '' if self._started else text.lstrip(_WHITESPACE)
    if stripped and not stripped.startswith('{'):
      raise rules.LayoutError(f'{self._path}: not valid JSON for this layout: expected an '
                              f"object ('{{'), found {stripped[:1]!r}")
    self._started = self._started or bool(stripped)

  def invalid(self, error: Exception) -> rules.LayoutError:
    """The error naming the file and the bytes whose parsing failed (ijson's message shows
    the text around the failure)."""
    if isinstance(error, UnicodeDecodeError):  # ijson's yajl2 backend decoding its own output
      problem = 'a string holds a \\u escape of a lone UTF-16 surrogate'
    else:
      problem = error.args[0] if error.args else error
      if isinstance(problem, bytes):
        problem = problem.decode('utf-8', 'replace')
    return rules.LayoutError(f'{self._path}: not valid JSON between bytes {self.start} and '
                             f'{self.end}: {str(problem).rstrip()}')


def array_entries(path: str, key: str) -> Iterator[Tuple[int, Any]]:
  """(n, entry) for the entries of the array member `key` of the JSON object in `path`.

  n is the entry's 1-based position. A file without that member (or where it
  is not an array) yields nothing.

  Raises:
    rules.LayoutError: the file is not a JSON object (the message names the
      file and the bytes where parsing failed).
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    source = _Source(f, path)
    entries = ijson.items(source, f'{key}.item', use_float=True, buf_size=_CHUNK_BYTES)
    number = 0
    while True:
      try:
        entry = next(entries)
      except StopIteration:
        return
      except (ijson.JSONError, UnicodeDecodeError) as error:
        raise source.invalid(error) from error
      number += 1
      yield number, _unescape(entry) if source.escaped else entry
