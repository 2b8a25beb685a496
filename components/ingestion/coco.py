"""MS COCO 2014 captions: annotations/captions_{train,val}2014.json with train2014/, val2014/.

  train2014/<file_name>                   images of COCO's train set
  val2014/<file_name>                     images of COCO's val set
  annotations/captions_train2014.json     {"images": [{"id", "file_name", ...}],
  annotations/captions_val2014.json        "annotations": [{"image_id", "id", "caption"}], ...}
  dataset_coco.json                       optional Karpathy split file at the root:
                                          the splits (karpathy.py)
An image's id is its file name (e.g. "COCO_val2014_000000391895.jpg"); the
JSON files' numeric ids only join annotations to images within one file.
Splits without a Karpathy file: COCO train -> 'train', and COCO val divided
by rules.hash_split into 'eval' and 'demo' (half each), as COCO's test
captions are not public.

Both files are streamed entry by entry (json_stream), never loaded whole, in
two passes (the images, then the annotations, which may come first); the
report's line of an entry is its 1-based position in its array. An image
entry without a string "file_name", or an annotation without an integer
"image_id", is a 'malformed line'; an annotation whose image_id is not in
the file's images list is 'caption of an unknown image' (detail: the id).
"""

import os
from typing import Dict, Optional

from components import names
from components.ingestion import json_stream
from components.ingestion import karpathy
from components.ingestion import rules

COCO = 'coco'
ANNOTATIONS_DIR = 'annotations'
# COCO set -> (captions file, image folder).
SETS = {
    'train': ('captions_train2014.json', 'train2014'),
    'val': ('captions_val2014.json', 'val2014'),
}
# Split of COCO val images without a Karpathy file: half eval, half demo.
VAL_HASH_BUCKETS = ((names.EVAL_SPLIT, 1), (names.DEMO_SPLIT, 1))

COCO_EXPECTS = (
    'MS COCO 2014: ' + ', '.join(f'{ANNOTATIONS_DIR}/{f}' for f, _ in SETS.values()) +
    ' with the images in ' + ', '.join(f'{d}/' for _, d in SETS.values()) +
    f' ({karpathy.SPLIT_FILE_NAMES[2]} optional, for the splits)')


def detect(root: str) -> Optional[rules.Layout]:
  """The COCO layout if `root` has annotations/captions_*2014.json."""
  files = {}
  for name, (captions, image_dir) in SETS.items():
    captions = os.path.join(root, ANNOTATIONS_DIR, captions)
    image_dir = os.path.join(root, image_dir)
    if rules.isfile(captions):
      files[f'captions:{name}'] = captions
      files[f'images:{name}'] = image_dir
  if not files:
    return None
  missing = [p for role, p in files.items()
             if role.startswith('images:') and not rules.isdir(p)]
  if len(files) != 2 * len(SETS) or missing:
    raise rules.LayoutError(
        f'{root!r} is an incomplete COCO folder: found {", ".join(sorted(files.values()))}, '
        f'missing {", ".join(missing) or "a captions file"} ({COCO_EXPECTS})')
  split_file = karpathy.find_split_file(root)
  if split_file:
    files[karpathy.SPLIT_FILE] = split_file
  return rules.Layout(COCO, root, files)


def _read_captions(builder: rules.DatasetBuilder, path: str, image_dir: str,
                   split_of) -> None:
  """Streams one captions file; split_of(id) is the split without Karpathy."""
  file_names: Dict[int, str] = {}
  for number, entry in json_stream.array_entries(path, 'images'):
    file_name = entry.get('file_name') if isinstance(entry, dict) else None
    image_id = rules.decode_id(file_name) if isinstance(file_name, str) else ''
    numeric_id = entry.get('id') if isinstance(entry, dict) else None
    if not image_id or not isinstance(numeric_id, int):
      builder.reject_line(path, number, rules.MALFORMED_LINE)
      continue
    file_names[numeric_id] = image_id
    builder.name_image(image_id, os.path.join(image_dir, image_id))
  # A second pass, as the annotations may come before the images in the file.
  for number, entry in json_stream.array_entries(path, 'annotations'):
    numeric_id = entry.get('image_id') if isinstance(entry, dict) else None
    caption = entry.get('caption') if isinstance(entry, dict) else None
    if not isinstance(numeric_id, int) or not isinstance(caption, str):
      builder.reject_line(path, number, rules.MALFORMED_LINE)
    elif numeric_id in file_names:
      builder.add_caption(path, number, file_names[numeric_id], caption)
    else:
      builder.reject_line(path, number, rules.UNKNOWN_IMAGE, detail=f'image_id {numeric_id}')
  if split_of:
    for image_id in file_names.values():
      builder.assign_split(image_id, split_of(image_id))


def read(layout: rules.Layout, restval_split: str) -> rules.Dataset:
  builder = rules.DatasetBuilder(layout)
  split_file = layout.files.get(karpathy.SPLIT_FILE)
  default_splits = {
      'train': lambda image_id: names.TRAIN_SPLIT,
      'val': lambda image_id: rules.hash_split(image_id, VAL_HASH_BUCKETS),
  }
  for name in SETS:
    image_dir = layout.files[f'images:{name}']
    image_ids = builder.add_image_folder(image_dir)
    _read_captions(builder, layout.files[f'captions:{name}'], image_dir,
                   None if split_file else default_splits[name])
    if not split_file:  # files no captions file lists still belong to their set
      for image_id in image_ids:
        builder.assign_split(image_id, default_splits[name](image_id))
  if split_file:
    karpathy.read_entries(builder, split_file, restval_split, layout.root,
                          with_captions=False)
  return builder.build(default_folder=layout.root)
