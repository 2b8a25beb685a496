"""Tests of bench/real_scale.py's stand-in for Flickr8k's text: captions of
Flickr8k's statistics (testing/synthetic_captions.py), read back through the
real Flickr8k reader."""
import collections
import math
import os

import numpy as np

from components import names
from components.ingestion import flickr8k
from components.ingestion import shapes_dataset
from testing import synthetic_captions

# Flickr8k's train captions (6,000 images, 30,000 captions): 2,538 words seen
# at least 5 times (neuraltalk's vocabulary), and the ExampleGen-read real
# files gave 4,447 words seen at least twice.
FLICKR8K_TRAIN_WORDS_AT_LEAST_5, FLICKR8K_TRAIN_WORDS_AT_LEAST_2 = 2538, 4447


def _read(root: str):
  return flickr8k.read(flickr8k.detect_official(root))


def _placeholder_folder(root: str, num_ids: int) -> None:
  """The official layout with `num_ids` empty image files and one-word captions:
  the reader checks the text, not the image bytes, so the test needs no JPEGs."""
  image_dir = os.path.join(root, flickr8k.OFFICIAL_IMAGE_DIRS[0])
  os.makedirs(image_dir)
  ids = [f'{i:05d}_stand_in.jpg' for i in range(num_ids)]
  for image_id in ids:
    open(os.path.join(image_dir, image_id), 'wb').close()
  with open(os.path.join(root, flickr8k.TOKEN_FILE), 'w', encoding='utf-8') as f:
    f.writelines(f'{image_id}#{n}\tplaceholder {n}\n' for image_id in ids for n in range(5))
  blocks = {names.TRAIN_SPLIT: ids[:6000], names.EVAL_SPLIT: ids[6000:7000],
            names.DEMO_SPLIT: ids[7000:8000]}
  for split, file_name in flickr8k.SPLIT_FILES.items():
    with open(os.path.join(root, file_name), 'w', encoding='utf-8') as f:
      f.writelines(image_id + '\n' for image_id in blocks[split])


def test_flickr8k_captions_have_flickr8k_statistics(tmp_path):
  root = str(tmp_path / 'Flickr8k')
  _placeholder_folder(root, synthetic_captions.FLICKR8K_IMAGES)
  synthetic_captions.write_flickr8k_token_file(root)
  dataset = _read(root)

  in_splits = dataset.records
  assert len(in_splits) == 8000 and len(dataset.rejects) == 91  # the ids of no split
  assert {len(r.captions) for r in in_splits} == {synthetic_captions.CAPTIONS_PER_IMAGE}
  words = collections.Counter(w for r in in_splits for c in r.captions for w in c.split())
  assert 7000 <= len(words) <= 9000
  lengths = [len(c.split()) for r in in_splits for c in r.captions]
  assert 10 <= np.mean(lengths) <= 12 and min(lengths) >= 3 and max(lengths) <= 40
  # Zipf-like: the top word is about one in seven, and frequency falls with
  # rank with a log-log slope near Zipf's -1 (steeper in the tail, as in Flickr8k).
  ranked = [count for _, count in words.most_common()]
  assert 0.08 <= ranked[0] / sum(ranked) <= 0.2
  slope = (math.log(ranked[999]) - math.log(ranked[9])) / (math.log(1000) - math.log(10))
  assert -2.0 <= slope <= -0.8
  train = collections.Counter(w for r in in_splits if r.split == names.TRAIN_SPLIT
                              for c in r.captions for w in c.split())
  at_least_5 = sum(count >= 5 for count in train.values())
  at_least_2 = sum(count >= 2 for count in train.values())
  assert 0.7 <= at_least_5 / FLICKR8K_TRAIN_WORDS_AT_LEAST_5 <= 1.3
  assert 0.7 <= at_least_2 / FLICKR8K_TRAIN_WORDS_AT_LEAST_2 <= 1.3


def test_flickr8k_token_file_replaces_the_shapes_captions(tmp_path):
  root = str(tmp_path / 'Flickr8k')
  shapes_dataset.generate(root, num_images=24, image_size=32, layout=shapes_dataset.OFFICIAL)
  shapes = {r.image_id: r for r in _read(root).records}
  synthetic_captions.write_flickr8k_token_file(root)
  with open(os.path.join(root, flickr8k.TOKEN_FILE), 'rb') as f:
    first = f.read()
  synthetic_captions.write_flickr8k_token_file(root)
  with open(os.path.join(root, flickr8k.TOKEN_FILE), 'rb') as f:
    assert f.read() == first  # seeded: the same folder again

  dataset = _read(root)
  assert {r.image_id: r.split for r in dataset.records} == {i: r.split for i, r in shapes.items()}
  for record in dataset.records:
    assert len(record.captions) == synthetic_captions.CAPTIONS_PER_IMAGE
    assert not set(record.captions) & set(shapes[record.image_id].captions)
    assert len({c.split()[0] for c in record.captions}) == 1  # the image's first word
