"""Where an attention model looked for each word, drawn over the image: numpy and PIL, no TensorFlow.

An attention model's caption signature answers, beside the caption, its
weights over the backbone's grid for each word (features.ATTENTION_OUTPUT).
A word's map is shown as the image lit where the weights are high and dimmed
where they are low: each map is divided by its own maximum (so every word's
peak is fully lit, whatever its spread), upsampled bilinearly to the image,
and each pixel is darkened by DIM_OPACITY * (1 - weight). Dimming rather than
a false-colour heat map keeps the pixels' own colours where the model looked,
which is what colour words are about.

The TF Serving client (serving/client.py --attention_maps) writes the maps as
PNGs (`map_images`); the gallery (components/evaluation/gallery.py) inlines the
normalised grids (`quantized_maps`) in its page, whose script draws them with
the same formula over the thumbnails.
"""
import io
import re
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image
from PIL import ImageOps

# How dark a pixel the model did not look at gets (0: untouched, 1: black).
DIM_OPACITY = 0.8
# The EXIF tag that says how a camera image is rotated or mirrored.
_EXIF_ORIENTATION = 0x0112
# PIL's exif_transpose methods per EXIF orientation (1 and unknown values: none).
_ORIENTATION_TRANSPOSES = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,), 7: (Image.Transpose.TRANSVERSE,), 8: (Image.Transpose.ROTATE_90,),
}


def caption_words(caption: str) -> List[str]:
  """The words of a caption, one per attention row (the serving contract joins them by single spaces)."""
  return caption.split()


def word_maps(caption: str, attention: np.ndarray) -> np.ndarray:
  """float32 [num_words, grid_h, grid_w]: each word's map of `attention`, divided by its maximum.

  Args:
    caption: the caption the attention belongs to (features.CAPTION_OUTPUT).
    attention: float32 [max_length, grid_h, grid_w], one image's rows of features.ATTENTION_OUTPUT.

  Raises:
    ValueError: if the caption has more words than `attention` has rows.
  """
  attention = np.asarray(attention, np.float32)
  words = caption_words(caption)
  if attention.ndim != 3 or len(words) > len(attention):
    raise ValueError(f'Attention of shape {attention.shape} cannot hold the {len(words)} words of '
                     f'{caption!r}; expected [max_length >= {len(words)}, grid_h, grid_w].')
  maps = np.clip(attention[:len(words)], 0.0, None)
  peaks = maps.max(axis=(1, 2), keepdims=True)
  return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)


def _orientation(image: Image.Image) -> int:
  return image.getexif().get(_EXIF_ORIENTATION, 1)


def upright(image: Image.Image, maps: np.ndarray) -> Tuple[Image.Image, np.ndarray]:
  """The image and its maps [num_words, grid_h, grid_w] turned as its EXIF orientation says.

  The serving graph decodes the pixels as stored (no EXIF rotation), so the
  maps are turned with the image to stay over what the model saw.
  """
  transposes = _ORIENTATION_TRANSPOSES.get(_orientation(image), ())
  if not transposes:
    return image, maps
  turned = [Image.fromarray(np.ascontiguousarray(m, np.float32), mode='F') for m in maps]
  for method in transposes:
    turned = [m.transpose(method) for m in turned]
  return ImageOps.exif_transpose(image), np.stack([np.asarray(m) for m in turned]) if turned else maps


def quantized_maps(image_bytes: bytes, caption: str, attention: np.ndarray) -> np.ndarray:
  """uint8 [num_words, grid_h', grid_w']: `word_maps` turned upright with the image (see `upright`),
  scaled to 0..255: compact enough to inline in a page.

  Raises:
    PIL.UnidentifiedImageError, OSError: if the bytes are not a decodable image.
    ValueError: as `word_maps`.
  """
  maps = word_maps(caption, attention)
  with Image.open(io.BytesIO(image_bytes)) as opened:
    _, maps = upright(opened, maps)
  return np.rint(maps * 255).astype(np.uint8)


def overlay(image: Image.Image, word_map: np.ndarray) -> Image.Image:
  """The RGB image lit where `word_map` (float [grid_h, grid_w], 0..1) is high, dimmed where it is low."""
  rgb = image.convert('RGB')
  upsampled = Image.fromarray(np.asarray(word_map, np.float32), mode='F').resize(
      rgb.size, Image.Resampling.BILINEAR)
  light = 1.0 - DIM_OPACITY * (1.0 - np.clip(np.asarray(upsampled), 0.0, 1.0))
  pixels = np.asarray(rgb, np.float32) * light[:, :, None]
  return Image.fromarray(np.rint(pixels).astype(np.uint8), mode='RGB')


def file_word(word: str) -> str:
  """A word as it can stand in a file name: characters other than letters, digits, '_' and '-' become '_'."""
  return re.sub(r'[^\w-]', '_', word, flags=re.ASCII) or '_'


def map_images(image_bytes: bytes, caption: str, attention: np.ndarray,
               max_size: Optional[int] = None) -> List[Tuple[str, Image.Image]]:
  """(word, the image with that word's map over it) per word of the caption, in order.

  The image is shown upright (EXIF) and shrunk to fit max_size x max_size when given.

  Raises:
    PIL.UnidentifiedImageError, OSError: if the bytes are not a decodable image.
    ValueError: as `word_maps`.
  """
  maps = word_maps(caption, attention)
  with Image.open(io.BytesIO(image_bytes)) as opened:
    opened.load()
    image, maps = upright(opened, maps)
    image = image.convert('RGB')
  if max_size is not None:
    image.thumbnail((max_size, max_size))
  return [(word, overlay(image, word_map)) for word, word_map in zip(caption_words(caption), maps)]
