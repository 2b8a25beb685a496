"""Karpathy's split files: dataset_flickr8k.json, dataset_flickr30k.json, dataset_coco.json.

The splits the captioning literature compares on (Karpathy & Fei-Fei, 2015;
im2txt uses them for COCO). One JSON object per dataset:
  {"images": [{"filepath"?: "val2014", "filename": "COCO_val2014_...jpg",
               "split": "train" | "val" | "test" | "restval",
               "sentences": [{"raw": "A man ...", "tokens": [...]}, ...]}, ...],
   "dataset": "coco"}
Split mapping: train -> 'train', val -> 'eval', test -> 'demo', and restval
(COCO's val2014 images left out of Karpathy's val and test) -> 'train' by
default, as im2txt and Karpathy do; `restval_split` chooses another split.

Used two ways:
  * as a layout of its own ('karpathy'): the file at the folder's root with
    the images in <filepath>/<filename>, or in one of KARPATHY_IMAGE_DIRS when
    an entry has no filepath (Flickr8k and Flickr30k); captions are the
    sentences' "raw" text;
  * as the split source of the Flickr30k and COCO layouts, when the file sits
    at their root (captions then come from those layouts' own files).

The file is streamed entry by entry (json_stream), never loaded whole.
Entry-level problems are caption-level rejects: an entry that is not an
object with a string "filename" is one 'malformed line' (line = its 1-based
position in "images"); an entry whose "split" is none of the four names is
kept out of every split (its id is rejected as 'in no split'); a sentence
without a string "raw" is a 'malformed line'.
"""

import os
from typing import Optional

from components import names
from components.ingestion import json_stream
from components.ingestion import rules

KARPATHY = 'karpathy'
SPLIT_FILE_NAMES = ('dataset_flickr8k.json', 'dataset_flickr30k.json', 'dataset_coco.json')
# Where the images of entries without a "filepath" are looked for.
KARPATHY_IMAGE_DIRS = ('images', 'Images', 'Flicker8k_Dataset', 'Flickr8k_Dataset',
                       'flickr30k_images')
# Folders named by COCO entries' "filepath".
COCO_IMAGE_DIRS = ('train2014', 'val2014')
RESTVAL = 'restval'
SPLITS = {'train': names.TRAIN_SPLIT, 'val': names.EVAL_SPLIT, 'test': names.DEMO_SPLIT}

KARPATHY_EXPECTS = (
    f'Karpathy split file: one of {", ".join(SPLIT_FILE_NAMES)} with the images in '
    f'<filepath>/<filename> ({"/, ".join(COCO_IMAGE_DIRS)}/) or in one of '
    f'{"/, ".join(KARPATHY_IMAGE_DIRS)}/')

# Role in Layout.files.
SPLIT_FILE = 'karpathy'


def find_split_file(root: str) -> Optional[str]:
  """The Karpathy split file at `root`, if any; LayoutError if several."""
  found = [os.path.join(root, n) for n in SPLIT_FILE_NAMES
           if rules.isfile(os.path.join(root, n))]
  if len(found) > 1:
    raise rules.LayoutError(f'{root!r} holds several Karpathy split files '
                            f'({", ".join(found)}); keep the one of this dataset')
  return found[0] if found else None


def image_dirs(root: str):
  return [os.path.join(root, d) for d in KARPATHY_IMAGE_DIRS + COCO_IMAGE_DIRS
          if rules.isdir(os.path.join(root, d))]


def detect(root: str) -> Optional[rules.Layout]:
  """The Karpathy layout if `root` has a split file and an image folder."""
  split_file = find_split_file(root)
  if split_file is None:
    return None
  folders = image_dirs(root)
  if not folders:
    raise rules.LayoutError(f'{root!r} has {os.path.basename(split_file)} but no image '
                            f'folder ({KARPATHY_EXPECTS})')
  return rules.Layout(KARPATHY, root, {SPLIT_FILE: split_file})


def read_entries(builder: rules.DatasetBuilder, path: str, restval_split: str,
                 default_folder: str, with_captions: bool) -> None:
  """Streams the "images" entries of `path` into `builder`.

  Assigns each entry's split; with_captions: also adds its sentences.
  """
  splits = dict(SPLITS, **{RESTVAL: restval_split})
  for number, entry in json_stream.array_entries(path, 'images'):
    filename = entry.get('filename') if isinstance(entry, dict) else None
    image_id = rules.decode_id(filename) if isinstance(filename, str) else ''
    if not image_id:
      builder.reject_line(path, number, rules.MALFORMED_LINE)
      continue
    filepath = entry.get('filepath')
    folder = (os.path.join(builder.layout.root, filepath)
              if isinstance(filepath, str) and filepath else default_folder)
    builder.name_image(image_id, os.path.join(folder, image_id))
    split = splits.get(entry.get('split'))
    if split is not None:
      builder.assign_split(image_id, split)
    if not with_captions:
      continue
    sentences = entry.get('sentences')
    for sentence in sentences if isinstance(sentences, list) else [None]:
      raw = sentence.get('raw') if isinstance(sentence, dict) else None
      if isinstance(raw, str):
        builder.add_caption(path, number, image_id, raw)
      else:
        builder.reject_line(path, number, rules.MALFORMED_LINE, image_id)


def read(layout: rules.Layout, restval_split: str) -> rules.Dataset:
  builder = rules.DatasetBuilder(layout)
  folders = image_dirs(layout.root)
  for folder in folders:
    builder.add_image_folder(folder)
  read_entries(builder, layout.files[SPLIT_FILE], restval_split, folders[0],
               with_captions=True)
  return builder.build(default_folder=folders[0])
