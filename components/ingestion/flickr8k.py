"""Flickr8k's two layouts: the official distribution and Kaggle's re-packaging.

  official  Flicker8k_Dataset/<id>        images (Flickr8k_Dataset/ also accepted)
            Flickr8k.token.txt            "<id>#<n>\\t<caption>" lines
            Flickr_8k.trainImages.txt     ids of the train split  -> 'train'
            Flickr_8k.devImages.txt       ids of the dev split    -> 'eval'
            Flickr_8k.testImages.txt      ids of the test split   -> 'demo'
            the four text files at the folder's root or in Flickr8k_text/.
  kaggle    Images/<id>                   images
            captions.txt                  header "image,caption", then
                                          "<id>,<caption>" CSV lines
            split files as above, if present (root or Flickr8k_text/);
            otherwise splits come from rules.hash_split.

The text files are small (~40k lines) and streamed line by line into a
rules.DatasetBuilder, which applies the validation, repair and reject rules
shared by every layout (components/ingestion/rules.py).
"""

import csv
import os
import re
from typing import Dict, Optional

from components import names
from components.ingestion import rules

OFFICIAL = 'official'
KAGGLE = 'kaggle'

OFFICIAL_IMAGE_DIRS = ('Flicker8k_Dataset', 'Flickr8k_Dataset')
TEXT_DIR = 'Flickr8k_text'
TOKEN_FILE = 'Flickr8k.token.txt'
SPLIT_FILES = {
    names.TRAIN_SPLIT: 'Flickr_8k.trainImages.txt',
    names.EVAL_SPLIT: 'Flickr_8k.devImages.txt',
    names.DEMO_SPLIT: 'Flickr_8k.testImages.txt',
}
KAGGLE_IMAGE_DIR = 'Images'
KAGGLE_CAPTIONS_FILE = 'captions.txt'
KAGGLE_HEADER = ('image', 'caption')

OFFICIAL_EXPECTS = (
    f'official Flickr8k: {OFFICIAL_IMAGE_DIRS[0]}/ (or {OFFICIAL_IMAGE_DIRS[1]}/) '
    f'with the images, and {TOKEN_FILE}, {", ".join(SPLIT_FILES.values())} at the '
    f'root or in {TEXT_DIR}/')
KAGGLE_EXPECTS = (
    f'Kaggle Flickr8k: {KAGGLE_IMAGE_DIR}/ with the images and {KAGGLE_CAPTIONS_FILE} '
    f'with an "image,caption" header (split files as above optional)')

# Roles in Layout.files.
IMAGE_DIR = 'image_dir'
CAPTIONS = 'captions'

_TOKEN_KEY = re.compile(r'^(?P<id>.+)#(?P<n>\d+)$')


def _find_text_file(root: str, name: str) -> Optional[str]:
  for folder in (root, os.path.join(root, TEXT_DIR)):
    path = os.path.join(folder, name)
    if rules.isfile(path):
      return path
  return None


def _split_files(root: str, require_all: bool) -> Dict[str, str]:
  """split -> path of its split file; all three or none (LayoutError)."""
  found = {s: p for s, n in SPLIT_FILES.items() if (p := _find_text_file(root, n))}
  if (found or require_all) and len(found) != len(SPLIT_FILES):
    missing = ', '.join(SPLIT_FILES[s] for s in SPLIT_FILES if s not in found)
    raise rules.LayoutError(f'{root!r}: split file(s) {missing} not found '
                            '(give all three or none)')
  return {f'split:{split}': path for split, path in found.items()}


def detect_official(root: str) -> Optional[rules.Layout]:
  """The official layout if `root` has its image folder and token file."""
  image_dirs = [os.path.join(root, d) for d in OFFICIAL_IMAGE_DIRS
                if rules.isdir(os.path.join(root, d))]
  token_file = _find_text_file(root, TOKEN_FILE)
  if not image_dirs or not token_file:
    return None
  return rules.Layout(OFFICIAL, root, {
      IMAGE_DIR: image_dirs[0], CAPTIONS: token_file,
      **_split_files(root, require_all=True)})


def detect_kaggle(root: str) -> Optional[rules.Layout]:
  """The Kaggle layout if `root` has Images/ and captions.txt."""
  image_dir = os.path.join(root, KAGGLE_IMAGE_DIR)
  captions = os.path.join(root, KAGGLE_CAPTIONS_FILE)
  if not (rules.isdir(image_dir) and rules.isfile(captions)):
    return None
  return rules.Layout(KAGGLE, root, {
      IMAGE_DIR: image_dir, CAPTIONS: captions,
      **_split_files(root, require_all=False)})


def _read_token_lines(builder: rules.DatasetBuilder, path: str) -> None:
  """'<id>#<n>\\t<caption>' lines (official layout)."""
  for number, raw in rules.lines(path):
    key, tab, caption = raw.partition(b'\t')
    match = _TOKEN_KEY.match(rules.decode_id(key))
    image_id = match.group('id').strip() if tab and match else ''
    builder.add_caption(path, number, image_id, caption)


def _read_kaggle_lines(builder: rules.DatasetBuilder, path: str) -> None:
  """Header 'image,caption', then '<id>,<caption>' lines (CSV quoting allowed)."""
  for number, raw in rules.lines_after_header(path, ',', KAGGLE_HEADER, KAGGLE_EXPECTS):
    image_id, comma, caption = raw.partition(b',')
    image_id = rules.decode_id(image_id) if comma else ''
    try:  # captions containing commas are quoted in the Kaggle CSV
      caption = ','.join(next(csv.reader([caption.decode('utf-8')]), []))
    except UnicodeDecodeError:
      pass  # the builder rejects it as not UTF-8
    builder.add_caption(path, number, image_id, caption)


def read_split_files(builder: rules.DatasetBuilder, layout: rules.Layout) -> bool:
  """Assigns the splits the layout's split files list; False if it has none."""
  for split in names.SPLITS:
    path = layout.files.get(f'split:{split}')
    if path is None:
      return False
    for _, raw in rules.lines(path):
      image_id = rules.decode_id(raw) or raw.decode('utf-8', errors='replace').strip()
      builder.name_image(image_id, os.path.join(layout.files[IMAGE_DIR], image_id))
      builder.assign_split(image_id, split)
  return True


def read(layout: rules.Layout) -> rules.Dataset:
  """Streams the text files of an official or Kaggle folder through the rules."""
  builder = rules.DatasetBuilder(layout)
  image_dir = layout.files[IMAGE_DIR]
  builder.add_image_folder(image_dir)
  if layout.name == OFFICIAL:
    _read_token_lines(builder, layout.files[CAPTIONS])
  else:
    _read_kaggle_lines(builder, layout.files[CAPTIONS])
  has_splits = read_split_files(builder, layout)
  return builder.build(default_split=None if has_splits else rules.hash_split,
                       default_folder=image_dir)
