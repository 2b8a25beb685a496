"""The image-level checks of rules.py that need the bytes: read, header size, decode.

The ExampleGen (components/ingestion/verify.py) and the bulk captioner
(serving/bulk.py) run every image file through `read_and_check`, so an image
the pipeline would reject is rejected for the same reason everywhere, with the
same pixel limit the server enforces (components/image_limits.py).
"""
import dataclasses
import re

import tensorflow as tf

from components import image_limits
from components import names
from components.ingestion import rules

# TF error messages carry op boilerplate: '{{function_node ...}} <message>
# [Op:DecodeImage]'; the report keeps <message>.
_OP_BOILERPLATE = re.compile(r'^\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]$')
# JPEG files start with an SOI marker followed by another marker.
_JPEG_MAGIC = b'\xff\xd8\xff'


@dataclasses.dataclass(frozen=True)
class CheckedImage:
  """A file's bytes if it passed, else the reason (a rules.* image-level reason) and its detail."""
  image: bytes = b''
  reason: str = ''
  detail: str = ''

  @property
  def ok(self) -> bool:
    return not self.reason


def op_error_detail(error: tf.errors.OpError) -> str:
  """The first line of a TF error's message without the op boilerplate."""
  lines = (error.message or '').strip().splitlines()
  return _OP_BOILERPLATE.sub('', lines[0]) if lines else ''


def check_decodes(image: bytes) -> None:
  """Raises tf.errors.OpError unless tf.io.decode_image(channels=3) decodes `image`.

  JPEGs are decoded at 1/8 scale: libjpeg still parses every marker and
  every entropy-coded byte (where truncation and corruption show, with the
  same errors as at full scale) and skips most of the inverse DCT and colour
  conversion, which cannot fail; that halves the cost of the check. An alpha
  channel is dropped (channels=3), as the serving graph drops it.
  """
  if image.startswith(_JPEG_MAGIC):
    tf.io.decode_jpeg(image, channels=3, ratio=8)
  else:
    tf.io.decode_image(image, channels=3, expand_animations=False)


def read_and_check(path: str, max_pixels: int = names.MAX_IMAGE_PIXELS) -> CheckedImage:
  """Reads `path` and applies the image-level rules in order: unreadable, too large, not decodable."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      image = f.read()
  except tf.errors.OpError as error:
    return CheckedImage(reason=rules.UNREADABLE_IMAGE, detail=op_error_detail(error))
  too_large = image_limits.oversize(image, max_pixels)
  if too_large:
    return CheckedImage(reason=rules.IMAGE_TOO_LARGE, detail=f'{too_large}, over the limit of {max_pixels}')
  try:
    check_decodes(image)
  except tf.errors.OpError as error:
    return CheckedImage(reason=rules.NOT_AN_IMAGE, detail=op_error_detail(error))
  return CheckedImage(image=image)
