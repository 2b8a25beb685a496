"""The pixel limit ingestion and serving both enforce, checked from the header.

A small file can decode to a huge image (an 18000x18000 PNG of 0.9 MB costs
~0.9 GB decoded), so the check reads only the header, before anything
decodes the image. The limit is names.MAX_IMAGE_PIXELS.
"""
import io
from typing import Optional

from PIL import Image

# The formats tf.io.decode_image reads; PIL is asked about these only.
IMAGE_FORMATS = ('JPEG', 'PNG', 'GIF', 'BMP')


def oversize(encoded: bytes, max_pixels: int) -> Optional[str]:
  """'<w>x<h> = <n> pixels' if the header gives more than `max_pixels`, else None.

  None also for bytes PIL cannot identify: the decoder that runs next
  rejects those with its own message.
  """
  try:
    with Image.open(io.BytesIO(encoded), formats=IMAGE_FORMATS) as image:  # reads the header only
      width, height = image.size
  except Image.DecompressionBombError as error:  # over PIL's own limit, 2 * Image.MAX_IMAGE_PIXELS
    return str(error)
  except (OSError, ValueError):
    return None
  if width * height > max_pixels:
    return f'{width}x{height} = {width * height} pixels'
  return None
