"""Transform module code: captions to padded token ids, inside the TF graph.

Everything here runs in the tf.Transform graph, so the exact same
normalisation, tokenisation and vocabulary serve training and evaluation.

Caption normalisation (applied in this order):
  1. Unicode NFKC normalisation and case folding (`tensorflow_text.case_fold_utf8`),
     so 'A Dog' and 'a dog' are the same words.
  2. Every character that is not a letter, a digit, an apostrophe or whitespace
     becomes a space: punctuation never forms a word ('dog.' -> 'dog').
  3. Whitespace tokenisation (`tensorflow_text.WhitespaceTokenizer`): runs of
     whitespace separate words, leading and trailing whitespace disappear.

Ids: PAD=0, START=1, END=2, UNK=3 (components/names.py), then the learned
vocabulary from 4 on, most frequent first. Words below the frequency threshold
or beyond the size limit become UNK.

Sequence length L (tokens including START and END) is a percentile of the train
captions' lengths (or fixed by configuration); longer captions are truncated
before END is appended, so every sequence ends with END.

Output contract, one example per image (features.py keys):
  image_id         string [batch, 1]               passed through
  image            string [batch, 1]               encoded bytes, passed through:
                                                   decoding lives in the model,
                                                   where serving needs it too
  caption_ids      int64  [batch, (captions * L)]  sparse, row-major [captions, L]
  sequence_length  int64  [batch]                  L, the same for every example
The image is not augmented here: Transform runs once, augmentation must differ
every epoch (it lives in the Trainer's input pipeline).
"""
from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_text as text
import tensorflow_transform as tft

from components import names
from components import config as config_lib

# Characters that survive normalisation step 2.
_NOT_A_WORD_CHARACTER = r"[^\p{L}\p{N}'\s]"
# Resolution of the caption-length percentile (1 / buckets).
_LENGTH_QUANTILE_BUCKETS = 100


def normalize_captions(captions: tf.Tensor) -> tf.Tensor:
  """Steps 1-2 of the module docstring. string [n] -> string [n]."""
  folded = text.case_fold_utf8(captions)
  return tf.strings.regex_replace(folded, _NOT_A_WORD_CHARACTER, ' ')


def tokenize_captions(captions: tf.Tensor) -> tf.RaggedTensor:
  """Normalises and splits captions. string [n] -> string [n, (words)]."""
  return text.WhitespaceTokenizer().tokenize(normalize_captions(captions))


def _sequence_length(words: tf.RaggedTensor,
                     transform_config: config_lib.TransformConfig) -> tf.Tensor:
  """L as an int64 scalar: configured, or the length percentile + START/END."""
  if transform_config.sequence_length is not None:
    if transform_config.sequence_length < 3:
      raise ValueError('sequence_length must leave room for START, a word and END; '
                       f'got {transform_config.sequence_length}')
    return tf.constant(transform_config.sequence_length, tf.int64)
  if not 0 < transform_config.length_percentile <= 100:
    raise ValueError(f'length_percentile must be in (0, 100]; got {transform_config.length_percentile}')
  lengths = tf.cast(words.row_lengths(), tf.float32)
  if transform_config.length_percentile == 100:
    longest = tft.max(lengths)
  else:
    boundaries = tft.quantiles(lengths, _LENGTH_QUANTILE_BUCKETS, epsilon=0.001)
    index = int(round(transform_config.length_percentile * _LENGTH_QUANTILE_BUCKETS / 100)) - 1
    longest = boundaries[0, max(index, 0)]
  return tf.cast(tf.math.ceil(longest), tf.int64) + 2


def preprocessing_fn(inputs: Dict[str, Any],
                     custom_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """tf.Transform entry point; see the module docstring for the contract."""
  transform_config = config_lib.from_custom_config(config_lib.TransformConfig, custom_config)
  captions = tf.RaggedTensor.from_sparse(inputs[names.CAPTIONS_KEY])  # string [b, (captions)]
  words = tokenize_captions(captions.flat_values)  # string [total captions, (words)]

  vocabulary = tft.vocabulary(
      words.flat_values,
      top_k=transform_config.max_vocabulary_size,
      frequency_threshold=transform_config.min_word_frequency,
      vocab_filename=names.VOCABULARY_NAME)
  word_ids = tft.apply_vocabulary(words.flat_values, vocabulary, default_value=-1)
  word_ids = tf.where(word_ids < 0, tf.constant(names.UNKNOWN_ID, tf.int64),
                      word_ids + names.NUM_SPECIAL_TOKENS)
  word_ids = words.with_flat_values(word_ids)  # int64 [total captions, (words)]

  sequence_length = _sequence_length(words, transform_config)
  (word_ids,) = text.WaterfallTrimmer(sequence_length - 2).trim([word_ids])
  with_markers, _ = text.combine_segments(
      [word_ids], start_of_sequence_id=names.START_ID, end_of_segment_id=names.END_ID)
  padded, _ = text.pad_model_inputs(with_markers, sequence_length, pad_value=names.PAD_ID)
  # int64 [total captions, L] -> int64 [b, (captions * L)]
  per_image = tf.RaggedTensor.from_row_lengths(
      tf.reshape(padded, [-1]), captions.row_lengths() * sequence_length)

  batch_size = tf.shape(inputs[names.IMAGE_KEY], out_type=tf.int64)[0]
  return {
      names.IMAGE_ID_KEY: inputs[names.IMAGE_ID_KEY],
      names.IMAGE_KEY: inputs[names.IMAGE_KEY],
      names.CAPTION_IDS_KEY: per_image.to_sparse(),
      names.SEQUENCE_LENGTH_KEY: tf.fill([batch_size], sequence_length),
  }
