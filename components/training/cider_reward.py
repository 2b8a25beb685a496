"""CIDEr-D of token-id captions in NumPy, vectorised: the self-critical stage's reward.

The self-critical stage (components/training/scst.py) scores every sampled
caption of every training step: (samples + 1) x batch captions, thousands per
epoch. pycocoevalcap's CiderScorer walks n-gram dicts in Python, caption by
caption and reference by reference; here the same formula runs over arrays of
n-gram keys, a few NumPy calls per batch whatever its size.

The formula is the COCO toolkit's CIDEr-D (pycocoevalcap.cider, what the
evaluator reports; tests/test_scst.py checks the two agree): tf-idf vectors of
the 1- to 4-grams, the candidate's weights clipped at the reference's, cosine
per n, a Gaussian penalty (sigma 6) on the difference of the lengths (the
toolkit's length is the number of bigrams, so words - 1), averaged over n and
references, times 10. Two differences are deliberate: captions are the
Transform's token ids (rare words as <unk>) rather than PTB tokens, and the
document frequencies come from one fixed corpus (the train split's references,
as Rennie et al. do), not from the scored set.

Layout:
  * an n-gram of ids w1..wn is one int64 key, the digits (w_i + 1) in base
    (vocabulary size + 1): exact (no hashing), and no two orders share a key;
  * `Corpus` keeps, per (image, n-gram) of the references, the n-gram's count
    in each of the image's references ([keys, max references]), so all of a
    candidate's reference counts come from one `np.searchsorted`.
"""
from typing import NamedTuple, Sequence, Tuple

import numpy as np

from components import names

MAX_N = 4
SIGMA = 6.0
SCALE = 10.0


def words_and_lengths(ids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Word ids [M, T] (START-free, as sampled or as ids[:, 1:] of the Transform) -> (ids, lengths [M]).

  A caption's words run until its first END or PAD; what follows is ignored.
  """
  ids = np.asarray(ids, np.int64)
  stop = (ids == names.END_ID) | (ids == names.PAD_ID)
  lengths = np.where(stop.any(axis=1), stop.argmax(axis=1), ids.shape[1])
  return ids, lengths


class Ngrams(NamedTuple):
  """The distinct n-grams of a batch of captions, one entry per (caption, n-gram)."""
  row: np.ndarray  # int64 [E]: the caption
  order: np.ndarray  # int64 [E]: n - 1
  key: np.ndarray  # int64 [E]
  count: np.ndarray  # float64 [E]: times the n-gram occurs in the caption


def ngrams(ids: np.ndarray, lengths: np.ndarray, base: int) -> Ngrams:
  """The 1..MAX_N-grams of each caption (words ids[m, :lengths[m]]), counted per caption."""
  rows, orders, keys = [], [], []
  width = ids.shape[1]
  for n in range(1, MAX_N + 1):
    if width < n:
      break
    key = np.zeros((ids.shape[0], width - n + 1), np.int64)
    for offset in range(n):
      key = key * base + ids[:, offset:width - n + 1 + offset] + 1
    valid = np.arange(width - n + 1)[np.newaxis, :] + n <= lengths[:, np.newaxis]
    row, _ = np.nonzero(valid)
    rows.append(row)
    orders.append(np.full(row.shape, n - 1))
    keys.append(key[valid])
  entries = np.stack([np.concatenate(rows), np.concatenate(orders), np.concatenate(keys)], axis=1)
  if not len(entries):
    return Ngrams(*(np.zeros(0, np.int64),) * 3, np.zeros(0))
  unique, counts = np.unique(entries, axis=0, return_counts=True)
  return Ngrams(unique[:, 0], unique[:, 1], unique[:, 2], counts.astype(np.float64))


def _norms(grams: Ngrams, weights: np.ndarray, rows: int) -> np.ndarray:
  """Euclidean norm of each caption's tf-idf vector, per order: [rows, MAX_N]."""
  squares = np.bincount(grams.row * MAX_N + grams.order, weights ** 2, minlength=rows * MAX_N)
  return np.sqrt(squares).reshape(rows, MAX_N)


class Corpus:
  """Reference captions per image and their document frequencies: scores candidates against them."""

  def __init__(self, references: Sequence[Sequence[np.ndarray]], vocab_size: int):
    """references[i]: image i's reference captions, each an int array of word ids (no START/END)."""
    self.base = vocab_size + 1
    if self.base ** MAX_N >= 2 ** 63:
      raise ValueError(f'A vocabulary of {vocab_size} ids is too large for int64 {MAX_N}-gram keys.')
    if not references or any(len(refs) == 0 for refs in references):
      raise ValueError('Every image needs at least one reference caption.')
    self.num_refs = np.array([len(refs) for refs in references])
    flat = [np.asarray(ref, np.int64) for refs in references for ref in refs]
    lengths = np.array([len(ref) for ref in flat])
    ids = np.zeros((len(flat), max(lengths.max(), 1)), np.int64)
    for index, ref in enumerate(flat):  # once per corpus, not per step
      ids[index, :len(ref)] = ref
    image = np.repeat(np.arange(len(references)), self.num_refs)
    slot = np.arange(len(flat)) - np.repeat(np.cumsum(self.num_refs) - self.num_refs, self.num_refs)
    grams = ngrams(ids, lengths, self.base)
    # Document frequency: the images whose references hold the n-gram.
    per_image = np.unique(np.stack([image[grams.row], grams.key], axis=1), axis=0)
    self.df_keys, df = np.unique(per_image[:, 1], return_counts=True)
    if not len(self.df_keys):
      raise ValueError('The reference captions hold no words.')
    self.log_documents = np.log(float(len(references)))
    self.idf = self.log_documents - np.log(np.maximum(df, 1.0))
    g = np.searchsorted(self.df_keys, grams.key)
    # (image, n-gram) -> its count in each of the image's references.
    self.table_keys, where = np.unique(image[grams.row] * len(self.df_keys) + g, return_inverse=True)
    self.table_counts = np.zeros((len(self.table_keys), self.num_refs.max()))
    self.table_counts[where, slot[grams.row]] = grams.count
    # Per image and reference slot: the reference's norms and length (bigrams), zero where absent.
    self.ref_norms = np.zeros((len(references), self.num_refs.max(), MAX_N))
    self.ref_norms[image, slot] = _norms(grams, grams.count * self.idf[g], len(flat))
    self.ref_lengths = np.zeros((len(references), self.num_refs.max()))
    self.ref_lengths[image, slot] = np.maximum(lengths - 1, 0)
    self.ref_present = np.zeros((len(references), self.num_refs.max()), bool)
    self.ref_present[image, slot] = True

  def scores(self, images: np.ndarray, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CIDEr-D of caption m (words ids[m, :lengths[m]]) against image images[m]'s references: [M]."""
    images = np.asarray(images, np.int64)
    rows = len(images)
    grams = ngrams(np.asarray(ids, np.int64), np.asarray(lengths), self.base)
    g = np.minimum(np.searchsorted(self.df_keys, grams.key), len(self.df_keys) - 1)
    known = self.df_keys[g] == grams.key
    idf = np.where(known, self.idf[g], self.log_documents)  # unseen n-grams: df 1, as the toolkit
    weights = grams.count * idf
    table_key = images[grams.row] * len(self.df_keys) + g
    t = np.minimum(np.searchsorted(self.table_keys, table_key), len(self.table_keys) - 1)
    in_refs = known & (self.table_keys[t] == table_key)
    ref_weights = self.table_counts[t] * (in_refs * idf)[:, np.newaxis]  # [E, refs]
    clipped = np.minimum(weights[:, np.newaxis], ref_weights) * ref_weights
    index = grams.row * MAX_N + grams.order
    dots = np.stack([np.bincount(index, clipped[:, s], minlength=rows * MAX_N)
                     for s in range(clipped.shape[1])], axis=1).reshape(rows, MAX_N, -1)
    norms = _norms(grams, weights, rows)[:, :, np.newaxis] * self.ref_norms[images].transpose(0, 2, 1)
    cosines = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    delta = np.maximum(np.asarray(lengths) - 1, 0)[:, np.newaxis] - self.ref_lengths[images]
    penalty = np.exp(-delta ** 2 / (2 * SIGMA ** 2)) * self.ref_present[images]  # [M, refs]
    per_ref = cosines.mean(axis=1) * penalty
    return SCALE * per_ref.sum(axis=1) / self.num_refs[images]
