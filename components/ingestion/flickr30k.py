"""Flickr30k as distributed on Kaggle: results.csv and flickr30k_images/.

  flickr30k_images/<id>         images (Kaggle's zip nests them one level
                                deeper, flickr30k_images/flickr30k_images/;
                                both are accepted)
  results.csv                   header "image_name| comment_number| comment",
                                then "<id>| <n>| <caption>" lines, 5 per image
                                (at the root or in flickr30k_images/)
  dataset_flickr30k.json        optional Karpathy split file at the root:
                                the splits (karpathy.py); without it, splits
                                come from rules.hash_split.

Known malformed lines: the distributed results.csv has a line whose second
separator is missing ("2199200615.jpg| 4 A dog runs across the grass ."); a
line whose second field is a number followed by text is repaired into that
number and caption ('comment separator missing'). Other lines with fewer
than three fields, or a non-numeric comment number, are 'malformed line'.
"""

import os
import re
from typing import Optional

from components.ingestion import karpathy
from components.ingestion import rules

FLICKR30K = 'flickr30k'
IMAGE_DIR_NAME = 'flickr30k_images'
RESULTS_FILE = 'results.csv'
HEADER = ('image_name', 'comment_number', 'comment')
MISSING_SEPARATOR = 'comment separator missing'

FLICKR30K_EXPECTS = (
    f'Flickr30k: {IMAGE_DIR_NAME}/ with the images and {RESULTS_FILE} with an '
    f'"{"| ".join(HEADER)}" header ({karpathy.SPLIT_FILE_NAMES[1]} optional, for the splits)')

# Roles in Layout.files.
IMAGE_DIR = 'image_dir'
CAPTIONS = 'captions'

_NUMBER_THEN_CAPTION = re.compile(rb'^\s*\d+\s+(?P<caption>\S.*)$')


def detect(root: str) -> Optional[rules.Layout]:
  """The Flickr30k layout if `root` has results.csv (root or image folder)."""
  image_dir = os.path.join(root, IMAGE_DIR_NAME)
  results = [p for p in (os.path.join(root, RESULTS_FILE), os.path.join(image_dir, RESULTS_FILE))
             if rules.isfile(p)]
  if not results:
    return None
  if not rules.isdir(image_dir):
    raise rules.LayoutError(f'{root!r} has {RESULTS_FILE} but no {IMAGE_DIR_NAME}/ '
                            f'image folder ({FLICKR30K_EXPECTS})')
  nested = os.path.join(image_dir, IMAGE_DIR_NAME)
  files = {IMAGE_DIR: nested if rules.isdir(nested) else image_dir, CAPTIONS: results[0]}
  split_file = karpathy.find_split_file(root)
  if split_file:
    files[karpathy.SPLIT_FILE] = split_file
  return rules.Layout(FLICKR30K, root, files)


def _read_results(builder: rules.DatasetBuilder, path: str) -> None:
  for number, raw in rules.lines_after_header(path, '|', HEADER, FLICKR30K_EXPECTS):
    fields = raw.split(b'|', 2)
    image_id = rules.decode_id(fields[0])
    if len(fields) == 3 and fields[1].strip().isdigit():
      builder.add_caption(path, number, image_id, fields[2])
      continue
    repaired = len(fields) == 2 and _NUMBER_THEN_CAPTION.match(fields[1])
    if repaired and image_id:
      builder.repair(MISSING_SEPARATOR)
      builder.add_caption(path, number, image_id, repaired.group('caption'))
    else:  # its id is not trusted: no image is named by a malformed line
      builder.reject_line(path, number, rules.MALFORMED_LINE)


def read(layout: rules.Layout, restval_split: str) -> rules.Dataset:
  builder = rules.DatasetBuilder(layout)
  image_dir = layout.files[IMAGE_DIR]
  builder.add_image_folder(image_dir)
  _read_results(builder, layout.files[CAPTIONS])
  split_file = layout.files.get(karpathy.SPLIT_FILE)
  if split_file:
    karpathy.read_entries(builder, split_file, restval_split, image_dir, with_captions=False)
  return builder.build(default_split=None if split_file else rules.hash_split,
                       default_folder=image_dir)
