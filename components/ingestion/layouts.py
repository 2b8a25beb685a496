"""Which dataset layout a folder is in, and the reader for it.

Detection tries, in order: MS COCO (coco.py), Flickr30k (flickr30k.py),
official Flickr8k and Kaggle Flickr8k (flickr8k.py), then a Karpathy split
file with its images (karpathy.py). A folder in none of them fails at once,
with a message saying what each layout expects. A folder that has a layout's
marker files but not the rest (results.csv without flickr30k_images/, ...)
fails with a message naming what is missing.

Every reader streams its text or JSON files once into a rules.DatasetBuilder,
so the validation, repair and reject rules are the same for every layout.
"""

import os
from typing import Callable, Dict, Tuple

import tensorflow as tf

from components import names
from components.ingestion import coco
from components.ingestion import flickr30k
from components.ingestion import flickr8k
from components.ingestion import karpathy
from components.ingestion import rules

LayoutError = rules.LayoutError

OFFICIAL = flickr8k.OFFICIAL
KAGGLE = flickr8k.KAGGLE
FLICKR30K = flickr30k.FLICKR30K
COCO = coco.COCO
KARPATHY = karpathy.KARPATHY
LAYOUTS = (COCO, FLICKR30K, OFFICIAL, KAGGLE, KARPATHY)  # detection order


_EXPECTS = (coco.COCO_EXPECTS, flickr30k.FLICKR30K_EXPECTS, flickr8k.OFFICIAL_EXPECTS,
            flickr8k.KAGGLE_EXPECTS, karpathy.KARPATHY_EXPECTS)
_DETECTORS: Tuple[Callable[[str], rules.Layout], ...] = (
    coco.detect, flickr30k.detect, flickr8k.detect_official, flickr8k.detect_kaggle,
    karpathy.detect)
_READERS: Dict[str, Callable[[rules.Layout, str], rules.Dataset]] = {
    COCO: coco.read,
    FLICKR30K: flickr30k.read,
    OFFICIAL: lambda layout, restval_split: flickr8k.read(layout),
    KAGGLE: lambda layout, restval_split: flickr8k.read(layout),
    KARPATHY: karpathy.read,
}


def expected_layouts_message(root: str, problem: str) -> str:
  return (f'{root!r} is not a dataset folder: {problem}. Expected one of these layouts:\n' +
          '\n'.join(f'  - {expects}' for expects in _EXPECTS))


def detect_layout(root: str) -> rules.Layout:
  """Finds the dataset files under `root`; raises LayoutError if no layout fits."""
  if not rules.isdir(root):
    raise LayoutError(expected_layouts_message(root, 'no such folder'))
  if '://' not in root:  # object storage paths (gs://, s3://) are absolute already
    root = os.path.abspath(root)
  for detect in _DETECTORS:
    layout = detect(root)
    if layout is not None:
      return layout
  entries = sorted(name.rstrip('/') for name in tf.io.gfile.listdir(root))
  if any(name in entries for name in flickr8k.OFFICIAL_IMAGE_DIRS):
    problem = f'an official Flickr8k image folder but no {flickr8k.TOKEN_FILE}'
  else:
    problem = f'it holds {", ".join(entries[:10]) or "nothing"}'
    if len(entries) > 10:
      problem += f' and {len(entries) - 10} more'
  raise LayoutError(expected_layouts_message(root, problem))


def read_dataset(root: str, restval_split: str = names.DEFAULT_RESTVAL_SPLIT) -> rules.Dataset:
  """Detects the layout of `root` and streams its text files through the rules.

  Args:
    root: the dataset folder.
    restval_split: the split Karpathy's 'restval' images go to (one of
      names.SPLITS); used by layouts with a Karpathy split file.

  Returns accepted records (image bytes not yet verified) and rejects such
  that every input id is in exactly one of them.

  Raises:
    LayoutError: `root` is not a dataset in a known layout, or one of its
      files cannot be parsed at all (the message names it).
    ValueError: restval_split is not a split.
  """
  if restval_split not in names.SPLITS:
    raise ValueError(f'restval_split must be one of {names.SPLITS}, got {restval_split!r}')
  layout = detect_layout(root)
  return _READERS[layout.name](layout, restval_split)
