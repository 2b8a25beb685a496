"""Caption diversity: does a captioner say different things about different images?

The classic failure on real data is one sentence under every image. BLEU does
not catch it: on Flickr8k a candidate that captioned all 1,000 eval images
"a man in a red shirt is standing in the water" still beat the captions-only
baseline's BLEU-4 by 12%. So the CaptionEvaluator measures, for each model,
over the captions it generated for a split:

  DISTINCT_CAPTION_SHARE  distinct captions / images captioned: 1/images for a
                          one-sentence captioner, 1.0 when no two images share
                          a caption (the gate's figure, see caption_evaluator).
  DISTINCT_WORDS          distinct words over all captions: how much of its
                          vocabulary the model actually uses (an integer).
  COPIED_CAPTION_SHARE    captions equal to a reference caption of the training
                          split / images captioned: 1.0 for a model that only
                          recites memorised sentences (recorded, not gated:
                          short captions of simple scenes are often copies).

Captions are compared after the Transform's normalisation, on both sides
(components/training/transform.py `tokenize_captions`: NFKC case folding, every
character other than a letter, digit, apostrophe or whitespace turned into a
space, whitespace tokenisation), so 'A dog runs.' and 'a dog  runs' are one
caption, and the words counted are the words the model's vocabulary was
learned from.
"""
from typing import AbstractSet, Dict, FrozenSet, List, Sequence, Tuple

import tensorflow as tf
from tfx.types import artifact

from components import names
from components import records
from components.evaluation import captioning
from components.training import transform

DISTINCT_CAPTION_SHARE = 'distinct_caption_share'
DISTINCT_WORDS = 'distinct_words'
COPIED_CAPTION_SHARE = 'copied_caption_share'
MEASURES = (DISTINCT_CAPTION_SHARE, DISTINCT_WORDS, COPIED_CAPTION_SHARE)
# Images whose reference captions are normalised in one TensorFlow call.
_IMAGES_PER_BATCH = 512

# A caption as its normalised words, e.g. ('a', 'dog', 'runs').
Words = Tuple[str, ...]


def normalize(captions: Sequence[str]) -> List[Words]:
  """Each caption as its tuple of normalised words (see the module docstring)."""
  if not captions:
    return []
  tokens = transform.tokenize_captions(tf.constant(list(captions), tf.string))
  return [tuple(word.decode('utf-8') for word in row) for row in tokens.to_list()]


def reference_captions(examples: artifact.Artifact,
                       split: str = names.TRAIN_SPLIT) -> FrozenSet[Words]:
  """The normalised reference captions of every image of `split`.

  Raises what records.iter_split_examples raises for a missing or broken split.
  """
  captions = set()
  for batch in captioning.batched(records.iter_split_examples(examples, split),
                                  _IMAGES_PER_BATCH):
    captions.update(normalize([reference for example in batch for reference in example.references]))
  return frozenset(captions)


def caption_diversity(captions: Sequence[str],
                      training_captions: AbstractSet[Words]) -> Dict[str, float]:
  """The MEASURES of one model's captions, one caption per image.

  Args:
    captions: the generated captions, one per image of the split.
    training_captions: the training split's normalised reference captions
      (`reference_captions`).

  Raises:
    ValueError: if `captions` is empty (no share of nothing).
  """
  if not captions:
    raise ValueError('No captions to measure the diversity of.')
  normalized = normalize(captions)
  return {
      DISTINCT_CAPTION_SHARE: len(set(normalized)) / len(normalized),
      DISTINCT_WORDS: len({word for words in normalized for word in words}),
      COPIED_CAPTION_SHARE: sum(words in training_captions for words in normalized) / len(normalized),
  }


def describe(measures: Dict[str, float]) -> str:
  """The MEASURES as one line of text, e.g. for the gallery page."""
  return (f'{measures[DISTINCT_CAPTION_SHARE]:.4f} distinct captions per image, '
          f'{measures[DISTINCT_WORDS]} distinct words, '
          f'{measures[COPIED_CAPTION_SHARE]:.4f} of the captions copied verbatim from the '
          'training references')
