"""Encoded test images: bytes as a camera or a client would send them.

Every function returns the bytes of an image file (PNG, JPEG, GIF or BMP, as
PIL writes them), the input of the ExampleGen, the serving signature and the
gallery. Images are a function of their arguments only.
"""
import io
from typing import Sequence, Tuple

import numpy as np
from PIL import Image


def encode(image: Image.Image, image_format: str = 'PNG') -> bytes:
  """The bytes of `image` saved as `image_format` ('PNG', 'JPEG', 'GIF', 'BMP')."""
  buffer = io.BytesIO()
  image.save(buffer, format=image_format)
  return buffer.getvalue()


def block_image(seed: int, size: Tuple[int, int] = (32, 32), image_format: str = 'PNG') -> bytes:
  """A distinct image per seed: a coloured background with a coloured block in one corner.

  Large flat areas survive JPEG, and different seeds differ in colours and in
  the block's extent, so a captioner sees different inputs.

  Args:
    seed: picks the colours and the block.
    size: (width, height) in pixels.
    image_format: PIL format name.
  """
  width, height = size
  rng = np.random.RandomState(seed)
  pixels = np.zeros((height, width, 3), np.uint8)
  pixels[...] = rng.randint(0, 256, 3)
  pixels[rng.randint(0, height // 2):, rng.randint(0, width // 2):] = rng.randint(0, 256, 3)
  return encode(Image.fromarray(pixels), image_format)


def solid_image(colour: Sequence[int], size: Tuple[int, int] = (30, 20), image_format: str = 'PNG',
                mode: str = 'RGB') -> bytes:
  """One colour all over: `colour` is (r, g, b); in mode 'RGBA' opaque, in mode 'L' its red value."""
  value = {'RGB': tuple(colour), 'RGBA': tuple(colour) + (255,), 'L': colour[0]}[mode]
  return encode(Image.new(mode, size, value), image_format)
