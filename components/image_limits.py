"""The pixel limit ingestion and serving both enforce, checked from the header.

A small file can decode to a huge image (an 18000x18000 PNG of 0.9 MB costs
~0.9 GB decoded), so the check reads only the header, before anything
decodes the image. The limit is names.MAX_IMAGE_PIXELS.
"""
import io
from typing import Optional

from PIL import BmpImagePlugin
from PIL import GifImagePlugin
from PIL import Image
from PIL import JpegImagePlugin
from PIL import PngImagePlugin

# The formats tf.io.decode_image reads; PIL is asked about these only.
IMAGE_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP')
# Their header readers: constructing one reads the header and nothing else,
# without the bomb check of Image.open, which over 2 * Image.MAX_IMAGE_PIXELS
# (about 179 megapixels) raises instead of reporting the size.
_HEADER_READERS = (JpegImagePlugin.JpegImageFile, PngImagePlugin.PngImageFile, GifImagePlugin.GifImageFile,
                   BmpImagePlugin.BmpImageFile)


def _size_over_pil_limit(encoded: bytes):
  """(width, height) of an image Image.open refused as a decompression bomb."""
  for reader in _HEADER_READERS:
    try:
      with reader(io.BytesIO(encoded)) as image:
        return image.size
    except (SyntaxError, OSError, ValueError):  # not this format
      continue
  raise ValueError('no header reader recognises the image')


def oversize(encoded: bytes, max_pixels: int) -> Optional[str]:
  """'<w>x<h> = <n> pixels' if the header gives more than `max_pixels`, else None.

  None also for bytes PIL cannot identify: the decoder that runs next
  rejects those with its own message.
  """
  try:
    with Image.open(io.BytesIO(encoded), formats=IMAGE_FORMATS) as image:  # reads the header only
      width, height = image.size
  except Image.DecompressionBombError:  # over PIL's own limit, 2 * Image.MAX_IMAGE_PIXELS
    width, height = _size_over_pil_limit(encoded)
  except (OSError, ValueError):
    return None
  if width * height > max_pixels:
    return f'{width}x{height} = {width * height} pixels'
  return None
