"""Synthetic captions of Flickr8k's shape, for benches that must not ship the real text.

Flickr8k's captions: five per image, about 11 words each (mean 11, sd 3.8),
from a vocabulary of about 8,000 distinct words whose frequencies fall off
like Zipf's law ("a" is about one word in seven; about 2,500 train words are
seen 5 times or more, 4,447 twice or more). Both generators here draw each
caption's length from that normal law and its words as a chain: the first
word is the image's (the same for its five captions), and each next word is a
rank drawn from a Zipf-like law and mapped through a function of the previous
word, so that a decoder has both an image and a bigram structure to learn.

  * `caption_ids`: the shared loop, for any rank law and successor map
    (bench/decoder_speed.py draws its token ids with it);
  * `flickr8k_captions`: words (pronounceable strings) with Flickr8k's
    word statistics; `write_flickr8k_token_file` puts them in a folder's
    Flickr8k.token.txt (bench/real_scale.py's stand-in for Flickr8k).
"""
import os
from typing import Callable, List, Sequence

import numpy as np

from components.ingestion import flickr8k

FLICKR8K_IMAGES = 8091  # image ids in Flickr8k.token.txt
CAPTIONS_PER_IMAGE = 5
MEAN_WORDS, SD_WORDS = 11.0, 3.8
MIN_WORDS, MAX_WORDS = 3, 40

# A Zipf-Mandelbrot law p(rank) ~ (rank + SHIFT) ** -EXPONENT over RANKS
# words, fitted to Flickr8k's counts (module docstring): over 8,091 images it
# gives about 7,800 distinct words, about 2,200 train words (6,000 images)
# seen 5 times or more and 4,600 twice or more, and a top word of 13%.
RANKS, EXPONENT, SHIFT = 10_000, 1.4, 2.0
# The successor map permutes ranks within blocks of this many neighbours,
# which are about equally frequent, so the chain keeps the law's spread; the
# first block (the most frequent words, "a", "in", ...) follows any word.
_BLOCK = 8
# Pronounceable words: rank i written in base len(_SYLLABLES).
_SYLLABLES = [c + v for c in 'bdfgklmnprstvz' for v in 'aeiou']


def zipf(ranks: int, exponent: float = 1.0, shift: float = 0.0) -> np.ndarray:
  """Probabilities of ranks 0..ranks-1 under p ~ (rank + 1 + shift) ** -exponent."""
  weights = (np.arange(1, ranks + 1) + shift) ** -exponent
  return weights / weights.sum()


def caption_ids(rng: np.random.Generator, first_words: Sequence[int], probabilities: np.ndarray,
                successor: Callable[[int, int], int]) -> List[List[int]]:
  """CAPTIONS_PER_IMAGE captions per entry of `first_words`, in order: each
  starts with the image's first word; then, for a length drawn from
  normal(MEAN_WORDS, SD_WORDS) clipped to [MIN_WORDS, MAX_WORDS] and
  truncated to an int (mean about 10.5 words), each next
  word is successor(previous word, a rank drawn with `probabilities`)."""
  rows = []
  for first in first_words:
    for _ in range(CAPTIONS_PER_IMAGE):
      words = int(np.clip(rng.normal(MEAN_WORDS, SD_WORDS), MIN_WORDS, MAX_WORDS))
      steps = rng.choice(len(probabilities), size=words - 1, p=probabilities)
      caption = [int(first)]
      for step in steps:
        caption.append(successor(caption[-1], int(step)))
      rows.append(caption)
  return rows


def word(rank: int) -> str:
  """A pronounceable, letters-only word, distinct for each rank."""
  syllables = [_SYLLABLES[rank % len(_SYLLABLES)]]
  while rank >= len(_SYLLABLES):
    rank //= len(_SYLLABLES)
    syllables.append(_SYLLABLES[rank % len(_SYLLABLES)])
  return ''.join(reversed(syllables))


def _block_successor(previous: int, step: int) -> int:
  """`step`'s rank moved within its block by the previous word."""
  if step < _BLOCK:
    return step
  return step - step % _BLOCK + (step + previous) % _BLOCK


def flickr8k_captions(images: int, seed: int = 0) -> List[List[str]]:
  """CAPTIONS_PER_IMAGE captions (strings) for each of `images` images, with
  Flickr8k's lengths and word statistics (module docstring); a pure function
  of (images, seed)."""
  rng = np.random.default_rng(seed)
  probabilities = zipf(RANKS, EXPONENT, SHIFT)
  first_words = rng.choice(RANKS, size=images, p=probabilities)
  rows = caption_ids(rng, first_words, probabilities, _block_successor)
  captions = [' '.join(word(rank) for rank in row) for row in rows]
  return [captions[i:i + CAPTIONS_PER_IMAGE] for i in range(0, len(captions), CAPTIONS_PER_IMAGE)]


def write_flickr8k_token_file(data_dir: str, seed: int = 0) -> None:
  """Replaces the folder's Flickr8k.token.txt with captions of Flickr8k's
  statistics, five for each id it lists, in its order."""
  path = os.path.join(data_dir, flickr8k.TOKEN_FILE)
  with open(path, encoding='utf-8') as f:
    ids = list(dict.fromkeys(line.split('#', 1)[0] for line in f if line.strip()))
  captions = flickr8k_captions(len(ids), seed)
  with open(path, 'w', encoding='utf-8', newline='\n') as f:
    f.writelines(f'{image_id}#{n}\t{caption}\n' for image_id, image_captions in zip(ids, captions)
                 for n, caption in enumerate(image_captions))
