"""A tiny Flickr8k-layout dataset whose captions say the image's colour, or ignore it.

For end-to-end runs that must decide a blessing within a test's time: a
captioner learns a whole-image colour in a few epochs of a tiny run, where the
embedded shapes dataset needs the main job's minutes. Written in the official
layout (components/ingestion/flickr8k.py names):

  <root>/Flicker8k_Dataset/colour_<i>.jpg    JPEG, image_size x image_size, one
      colour of PALETTE with a little noise
  <root>/Flickr8k.token.txt                  "<id>#<n>\\t<caption>", n = 0..4
  <root>/Flickr_8k.{train,dev,test}Images.txt

Images come in blocks of one image per colour; of every 8 blocks, 6 go to
train, 1 to eval (dev) and 1 to demo (test), so every split holds each colour
equally often. Each colour has its own words (`red tomato`, `blue sky`, ...)
and every caption bigram holds one of them, so no caption that ignores the
image scores well: on the eval split the best fixed caption reaches BLEU-4
about 0.23, one naming the right colour 1.0.

With `captions_follow_image=False` every image gets the same five captions
(IMAGE_BLIND_CAPTIONS): a model that ignores the image does as well as any, so
no captioner can beat the captions-only baseline.
"""
import os
from typing import Dict, NamedTuple, Tuple

import numpy as np
from PIL import Image

from components import names
from components.ingestion import flickr8k
from testing import images

# Colour name -> (RGB, a thing of that colour): the two words every caption of it holds.
PALETTE = {
    'red': ((210, 40, 40), 'tomato'),
    'green': ((40, 170, 60), 'leaf'),
    'blue': ((40, 70, 210), 'sky'),
    'yellow': ((235, 215, 40), 'lemon'),
    'white': ((245, 245, 245), 'snow'),
    'black': ((15, 15, 15), 'night'),
}
TEMPLATES = (
    'a {colour} {thing} picture',
    'the {colour} {thing} colour',
    'plain {colour} like {thing}',
    'a {thing} {colour} image',
    '{thing} and {colour} everywhere',
)
# Of every 8 blocks: 6 train, 1 eval, 1 demo (Flickr8k's 6:1:1).
_SPLIT_OF_BLOCK = (names.TRAIN_SPLIT,) * 6 + (names.EVAL_SPLIT, names.DEMO_SPLIT)
_NOISE = 12  # +- grey levels per pixel, so no two images are byte-identical


# One caption per template, each of another colour: what every image is captioned with when
# the captions do not follow the image.
IMAGE_BLIND_CAPTIONS = tuple(template.format(colour=colour, thing=thing)
                             for template, (colour, (_, thing)) in zip(TEMPLATES, PALETTE.items()))


class ColourImage(NamedTuple):
  """What `write` wrote for one image."""
  split: str  # one of names.SPLITS
  colour: str  # of the pixels, a PALETTE key
  captions: Tuple[str, ...]  # captions(colour), or IMAGE_BLIND_CAPTIONS


def captions(colour: str) -> Tuple[str, ...]:
  """The five captions of an image of `colour`."""
  thing = PALETTE[colour][1]
  return tuple(template.format(colour=colour, thing=thing) for template in TEMPLATES)


def write(root: str, num_blocks: int = 16, image_size: int = 32, seed: int = 0,
          captions_follow_image: bool = True) -> Dict[str, ColourImage]:
  """Writes num_blocks * len(PALETTE) images into `root`; returns image id -> what was written.

  num_blocks should be a multiple of 8 for the 6:1:1 split (16 blocks: 72
  train, 12 eval, 12 demo images). Output is a function of the arguments.
  """
  rng = np.random.default_rng(seed)
  colours = list(PALETTE)
  image_dir = os.path.join(root, flickr8k.OFFICIAL_IMAGE_DIRS[0])
  os.makedirs(image_dir, exist_ok=True)
  written = {}
  for block in range(num_blocks):
    for index, colour in enumerate(colours):
      image_id = f'colour_{block * len(colours) + index:05d}.jpg'
      noise = rng.integers(-_NOISE, _NOISE + 1, size=(image_size, image_size, 3))
      pixels = np.clip(np.array(PALETTE[colour][0]) + noise, 0, 255).astype(np.uint8)
      with open(os.path.join(image_dir, image_id), 'wb') as f:
        f.write(images.encode(Image.fromarray(pixels), 'JPEG'))
      written[image_id] = ColourImage(_SPLIT_OF_BLOCK[block % len(_SPLIT_OF_BLOCK)], colour,
                                      captions(colour) if captions_follow_image else IMAGE_BLIND_CAPTIONS)
  with open(os.path.join(root, flickr8k.TOKEN_FILE), 'w') as f:
    f.writelines(f'{image_id}#{n}\t{caption}\n'
                 for image_id, image in written.items() for n, caption in enumerate(image.captions))
  for split in names.SPLITS:
    with open(os.path.join(root, flickr8k.SPLIT_FILES[split]), 'w') as f:
      f.writelines(f'{image_id}\n' for image_id, image in written.items() if image.split == split)
  return written
