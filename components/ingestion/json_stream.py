"""Streams the members of a large JSON object, one array entry at a time.

MS COCO's captions_train2014.json (~70 MB) and Karpathy's dataset_coco.json
(~140 MB, a token list per sentence) cost gigabytes as Python objects when
loaded whole with json.load. Their useful parts are top-level arrays of small
objects ("images", "annotations"), so this reads the file in 1 MB chunks and
decodes one array entry at a time with the standard library's decoder: memory
is one chunk plus one entry, whatever the file's size. (ijson does the same as
a library; it is not among the project's dependencies.)

Text handling, shared with the line-based readers: a leading UTF-8 byte-order
mark is dropped, and bytes that are not UTF-8 become lone surrogates
(errors='surrogateescape') so the rules can reject the one caption holding
them instead of the whole file.
"""

import codecs
import json
from typing import Any, Iterator, Tuple

import tensorflow as tf

from components.ingestion import rules

_CHUNK_BYTES = 1 << 20
_DECODER = json.JSONDecoder()
_WHITESPACE = ' \t\n\r'
# What may follow a complete value in valid JSON.
_DELIMITERS = _WHITESPACE + ',:]}'


class _Reader:
  """A window of decoded text over the file, refilled on demand."""

  def __init__(self, f, path: str):
    self._f = f
    self._path = path
    self._decoder = codecs.getincrementaldecoder('utf-8')(errors='surrogateescape')
    self._text = ''
    self._pos = 0
    self._consumed = 0  # characters dropped from the window's front
    self._eof = False
    while not self._text and not self._eof:  # a chunk may end inside a character
      self._fill()
    if self._text.startswith('\ufeff'):
      self._pos = 1

  def _fill(self) -> None:
    chunk = self._f.read(_CHUNK_BYTES)
    self._eof = not chunk
    self._consumed += self._pos
    self._text = self._text[self._pos:] + self._decoder.decode(chunk, final=self._eof)
    self._pos = 0

  def error(self, problem: str) -> rules.LayoutError:
    return rules.LayoutError(
        f'{self._path}: not valid JSON near character {self._consumed + self._pos}: {problem}')

  def peek(self) -> str:
    """The next non-whitespace character, not consumed; '' at the end."""
    while True:
      while self._pos < len(self._text) and self._text[self._pos] in _WHITESPACE:
        self._pos += 1
      if self._pos < len(self._text) or self._eof:
        return self._text[self._pos:self._pos + 1]
      self._fill()

  def expect(self, char: str) -> None:
    if self.peek() != char:
      raise self.error(f'expected {char!r}, found {self.peek() or "the end of the file"!r}')
    self._pos += 1

  def value(self) -> Any:
    """Decodes the next JSON value. A value not followed by a delimiter in the
    window is decoded again after a refill: a number cut by the window's end
    ("1" of "1.5") decodes, but is not the whole value."""
    self.peek()
    while True:
      try:
        value, end = _DECODER.raw_decode(self._text, self._pos)
      except json.JSONDecodeError as e:
        if self._eof:
          raise self.error(e.msg) from e
        self._fill()
        continue
      following = self._text[end:end + 1]  # '' at the window's end
      if self._eof or (following and following in _DELIMITERS):
        self._pos = end
        return value
      self._fill()


def members(path: str) -> Iterator[Tuple[str, int, Any]]:
  """(key, n, value) for the members of the JSON object in `path`, in order.

  An array member yields one triple per entry, n its 1-based position; any
  other member yields one triple with n = 0.

  Raises:
    rules.LayoutError: the file is not a JSON object (the message names the
      file and the character where parsing failed).
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    reader = _Reader(f, path)
    reader.expect('{')
    if reader.peek() == '}':
      return
    while True:
      key = reader.value()
      if not isinstance(key, str):
        raise reader.error('expected a member name')
      reader.expect(':')
      if reader.peek() == '[':
        reader.expect('[')
        number = 0
        while reader.peek() != ']':
          if number:
            reader.expect(',')
          number += 1
          yield key, number, reader.value()
        reader.expect(']')
      else:
        yield key, 0, reader.value()
      if reader.peek() != ',':
        break
      reader.expect(',')
    reader.expect('}')
