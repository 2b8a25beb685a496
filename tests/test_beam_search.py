"""Beam search against hand-computed answers, greedy decoding and exhaustive search."""
import itertools
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components import names
from components.training import model as model_lib
from components.training.beam_search import beam_search
from components.training.beam_search import beam_search_top_k

END = names.END_ID
START = names.START_ID
A, B, C, D = 4, 5, 6, 7  # learned words
IMAGE_ROWS = (8, 9)  # table rows playing the role of two images
TINY = 1e-6  # probability of every transition not listed


def _table(rows):
  """{row: {word: probability}} -> float32 [10, 8] log-probability table."""
  table = np.full([10, 8], math.log(TINY), np.float32)
  for row, probabilities in rows.items():
    for word, probability in probabilities.items():
      table[row, word] = math.log(probability)
  return tf.constant(table)


def _table_step_fn(table):
  """Next-word distribution from the table row of the last word; START reads the image's row.

  The state is the image row, so a wrongly re-gathered state shows up as a
  wrong caption for the other batch element.
  """
  def step_fn(word_ids, image_rows):
    rows = tf.where(tf.equal(word_ids, START), image_rows, word_ids)
    return tf.gather(table, rows), image_rows
  return step_fn


def _run(table, beam_width, max_length, images=IMAGE_ROWS):
  return beam_search(tf.constant(images, tf.int32), _table_step_fn(table), batch_size=len(images),
                     beam_width=beam_width, max_length=max_length, start_id=START, end_id=END)


# Image 8: greedy takes A (0.55) then ends with 0.4 (total 0.22); B then END is 0.45 * 0.9 = 0.405.
# Image 9: C D END, each step certain.
TABLE = _table({
    8: {A: 0.55, B: 0.45},
    9: {C: 0.999},
    A: {END: 0.4, C: 0.3, D: 0.3},
    B: {END: 0.9, D: 0.1},
    C: {D: 0.999},
    D: {END: 0.999},
})


def test_exact_captions_and_log_probs():
  ids, lengths, log_probs = _run(TABLE, beam_width=2, max_length=5)
  np.testing.assert_array_equal(ids.numpy(), [[B, END, 0, 0, 0], [C, D, END, 0, 0]])
  np.testing.assert_array_equal(lengths.numpy(), [2, 3])
  np.testing.assert_allclose(log_probs.numpy(), [math.log(0.45 * 0.9), 3 * math.log(0.999)], rtol=1e-5)
  assert ids.dtype == tf.int32 and lengths.dtype == tf.int32 and log_probs.dtype == tf.float32


def test_width_one_is_greedy():
  ids, lengths, log_probs = _run(TABLE, beam_width=1, max_length=5)
  np.testing.assert_array_equal(ids.numpy(), [[A, END, 0, 0, 0], [C, D, END, 0, 0]])
  np.testing.assert_array_equal(lengths.numpy(), [2, 3])
  np.testing.assert_allclose(log_probs.numpy(), [math.log(0.55 * 0.4), 3 * math.log(0.999)], rtol=1e-5)


def test_finished_beam_is_kept_while_others_continue():
  # A END (0.3) finishes at step 2; B C C ... stays more probable for a while
  # but every continuation ends below 0.3, so the early finished caption wins.
  table = _table({
      8: {A: 0.5, B: 0.5},
      9: {A: 0.5, B: 0.5},
      A: {END: 0.6, D: 0.4},
      B: {C: 0.99, END: 0.01},
      C: {C: 0.9, END: 0.1},
      D: {END: 0.999},
  })
  ids, lengths, log_probs = _run(table, beam_width=2, max_length=8)
  np.testing.assert_array_equal(ids.numpy()[0], [A, END, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(lengths.numpy(), [2, 2])
  np.testing.assert_allclose(log_probs.numpy()[0], math.log(0.3), rtol=1e-5)


def test_no_duplicate_beams_at_start():
  # If all beams were live at the first step, width 2 would keep C twice and
  # never see D, ending with C END (0.3) instead of D END (0.36).
  table = _table({8: {C: 0.6, D: 0.4}, 9: {C: 0.6, D: 0.4}, C: {END: 0.5, A: 0.45}, D: {END: 0.9, A: 0.1},
                  A: {END: 0.1, B: 0.9}})
  ids, _, log_probs = _run(table, beam_width=2, max_length=5)
  np.testing.assert_array_equal(ids.numpy()[:, :2], [[D, END], [D, END]])
  np.testing.assert_allclose(log_probs.numpy(), [math.log(0.36)] * 2, rtol=1e-5)


def test_returns_best_unfinished_when_nothing_ends():
  table = _table({8: {C: 0.6, D: 0.4}, 9: {D: 0.7, C: 0.3}, C: {C: 0.8, D: 0.2}, D: {D: 0.9, C: 0.1}})
  ids, lengths, log_probs = _run(table, beam_width=2, max_length=3)
  np.testing.assert_array_equal(ids.numpy(), [[C, C, C], [D, D, D]])
  np.testing.assert_array_equal(lengths.numpy(), [3, 3])
  np.testing.assert_allclose(log_probs.numpy(), [math.log(0.6 * 0.8 * 0.8), math.log(0.7 * 0.9 * 0.9)],
                             rtol=1e-5)


def test_runs_in_a_graph_with_unknown_batch_size():
  @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
  def search(image_rows):
    return beam_search(image_rows, _table_step_fn(TABLE), batch_size=tf.shape(image_rows)[0],
                       beam_width=2, max_length=5, start_id=START, end_id=END)

  ids, lengths, _ = search(tf.constant([9, 8, 9], tf.int32))
  np.testing.assert_array_equal(ids.numpy()[:, :3], [[C, D, END], [B, END, 0], [C, D, END]])
  np.testing.assert_array_equal(lengths.numpy(), [3, 2, 3])


def test_rejects_bad_widths():
  with pytest.raises(ValueError, match='beam_width'):
    _run(TABLE, beam_width=0, max_length=5)
  with pytest.raises(ValueError, match='max_length'):
    _run(TABLE, beam_width=2, max_length=0)


# --- On a tiny random Show-and-Tell decoder ---

VOCAB_SIZE = 6
MAX_LENGTH = 4


@pytest.fixture(scope='module')
def tiny_decoder():
  keras.utils.set_random_seed(7)
  model = model_lib.build_caption_model(vocab_size=VOCAB_SIZE, feature_dim=5, sequence_length=MAX_LENGTH + 1,
                                        embedding_dim=8, lstm_units=8, num_layers=2, dropout=0.0)
  # Random weights give almost uniform distributions; sharpen them so that
  # the best sequences are well separated from the runners-up.
  logits = model.get_layer('logits')
  logits.set_weights([w * 8.0 for w in logits.get_weights()])
  return model_lib.CaptionDecoder(model)


def _sequence_log_prob(decoder, image, sequence):
  states = decoder.initial_state(image[np.newaxis])
  total, word = 0.0, START
  for next_word in sequence:
    log_probs, states = decoder.step(tf.constant([word]), states)
    total += float(log_probs[0, next_word])
    word = next_word
  return total


def _exhaustive_best(decoder, image):
  """The most probable sequence over all sequences of at most MAX_LENGTH ids ending in END."""
  return _exhaustive_top_k(decoder, image, 1)[0]


def _exhaustive_top_k(decoder, image, k):
  """The k most probable (log_prob, sequence) over all sequences of at most MAX_LENGTH ids ending in END."""
  words = [w for w in range(VOCAB_SIZE) if w != END]
  candidates = [prefix + (END,) for length in range(MAX_LENGTH)
                for prefix in itertools.product(words, repeat=length)]
  scored = [(_sequence_log_prob(decoder, image, seq), seq) for seq in candidates]
  return sorted(scored, reverse=True)[:k]


def _greedy(decoder, image):
  states = decoder.initial_state(image[np.newaxis])
  word, sequence, total = START, [], 0.0
  while len(sequence) < MAX_LENGTH and word != END:
    log_probs, states = decoder.step(tf.constant([word]), states)
    word = int(np.argmax(log_probs[0]))
    sequence.append(word)
    total += float(log_probs[0, word])
  return sequence, total


def test_wide_beam_equals_exhaustive_search(tiny_decoder):
  images = np.random.default_rng(0).normal(size=[2, 5]).astype(np.float32)
  ids, lengths, log_probs = tiny_decoder.generate(tf.constant(images), beam_width=VOCAB_SIZE ** MAX_LENGTH,
                                                  max_length=MAX_LENGTH)
  for i, image in enumerate(images):
    best_log_prob, best_sequence = _exhaustive_best(tiny_decoder, image)
    assert list(ids.numpy()[i, :lengths[i]]) == list(best_sequence)
    np.testing.assert_allclose(log_probs.numpy()[i], best_log_prob, rtol=1e-4)


def test_width_one_equals_greedy_on_the_model(tiny_decoder):
  images = np.random.default_rng(1).normal(size=[3, 5]).astype(np.float32)
  ids, lengths, log_probs = tiny_decoder.generate(tf.constant(images), beam_width=1, max_length=MAX_LENGTH)
  for i, image in enumerate(images):
    sequence, total = _greedy(tiny_decoder, image)
    assert list(ids.numpy()[i, :lengths[i]]) == sequence
    np.testing.assert_array_equal(ids.numpy()[i, lengths[i]:], 0)
    np.testing.assert_allclose(log_probs.numpy()[i], total, rtol=1e-4)


@pytest.mark.parametrize('k', [1, 2, 3])
def test_top_k_equals_exhaustive_search(tiny_decoder, k):
  images = np.random.default_rng(2).normal(size=[2, 5]).astype(np.float32)
  ids, lengths, log_probs = tiny_decoder.generate(tf.constant(images), beam_width=VOCAB_SIZE ** MAX_LENGTH,
                                                  max_length=MAX_LENGTH, top_k=k)
  assert ids.shape == (2, k, MAX_LENGTH) and lengths.shape == (2, k) and log_probs.shape == (2, k)
  for i, image in enumerate(images):
    expected = _exhaustive_top_k(tiny_decoder, image, k)
    assert [list(ids.numpy()[i, j, :lengths[i, j]]) for j in range(k)] == [list(seq) for _, seq in expected]
    np.testing.assert_allclose(log_probs.numpy()[i], [lp for lp, _ in expected], rtol=1e-4)


def test_top_k_marks_captions_that_never_finished():
  # Image 9 can only say C D END; with max_length 3 and TINY ~ 0 elsewhere, the
  # second finished caption is one of the 1e-6 ones, far below; with no TINY
  # transitions at all (log 0), nothing else finishes and the slot is empty.
  table = _table({9: {C: 1.0}, C: {D: 1.0}, D: {END: 1.0}}).numpy()
  table[table == math.log(TINY)] = -np.inf
  ids, lengths, log_probs = beam_search_top_k(
      tf.constant([9], tf.int32), _table_step_fn(tf.constant(table)), batch_size=1, beam_width=2, max_length=3,
      start_id=START, end_id=END, top_k=2)
  np.testing.assert_array_equal(ids.numpy(), [[[C, D, END], [0, 0, 0]]])
  np.testing.assert_array_equal(lengths.numpy(), [[3, 0]])
  assert log_probs.numpy()[0, 0] == 0.0 and log_probs.numpy()[0, 1] == -np.inf


def test_top_k_must_not_exceed_the_beam_width():
  with pytest.raises(ValueError, match='top_k must be between 1 and beam_width'):
    beam_search_top_k(tf.constant([9], tf.int32), _table_step_fn(TABLE), batch_size=1, beam_width=2,
                      max_length=3, start_id=START, end_id=END, top_k=3)


def _attending_step_fn(table):
  """_table_step_fn that also 'attends' to the table row it read: a one-hot over the
  table's rows, so each step's weights name the image or word that step came from."""
  step_fn = _table_step_fn(table)

  def attend(word_ids, image_rows):
    rows = tf.where(tf.equal(word_ids, START), image_rows, word_ids)
    log_probs, states = step_fn(word_ids, image_rows)
    return log_probs, states, tf.one_hot(rows, table.shape[0])
  return attend


def _attention_rows(*rows, max_length, size=10):
  """float32 [max_length, size]: one-hot rows, then zeros."""
  expected = np.zeros([max_length, size], np.float32)
  for position, row in enumerate(rows):
    expected[position, row] = 1.0
  return expected


def test_attention_follows_its_beam():
  """Image 8's best caption, B END, comes from the second live beam (A was ahead after one
  step), and both finish in one step in the other order: each caption's weights must be
  those of the steps that made it, whatever slot its beam moved through."""
  ids, lengths, log_probs, attention = beam_search_top_k(
      tf.constant(IMAGE_ROWS, tf.int32), _attending_step_fn(TABLE), batch_size=2, beam_width=2,
      max_length=5, start_id=START, end_id=END, top_k=2, attention_size=10)
  np.testing.assert_array_equal(ids.numpy()[0], [[B, END, 0, 0, 0], [A, END, 0, 0, 0]])
  np.testing.assert_array_equal(ids.numpy()[1, 0], [C, D, END, 0, 0])
  assert attention.shape == (2, 2, 5, 10) and attention.dtype == tf.float32
  np.testing.assert_array_equal(attention.numpy()[0, 0], _attention_rows(8, B, max_length=5))
  np.testing.assert_array_equal(attention.numpy()[0, 1], _attention_rows(8, A, max_length=5))
  np.testing.assert_array_equal(attention.numpy()[1, 0], _attention_rows(9, C, D, max_length=5))
  # The same ids, lengths and log-probabilities as without attention.
  for with_weights, without in zip((ids, lengths, log_probs), beam_search_top_k(
      tf.constant(IMAGE_ROWS, tf.int32), _table_step_fn(TABLE), batch_size=2, beam_width=2,
      max_length=5, start_id=START, end_id=END, top_k=2)):
    np.testing.assert_array_equal(with_weights.numpy(), without.numpy())


def test_attention_of_an_unfinished_caption():
  """Nothing finishes within two steps for image 9 (C D END needs three): its best
  unfinished beam stands in, with that beam's weights."""
  ids, lengths, _, attention = beam_search_top_k(
      tf.constant([9], tf.int32), _attending_step_fn(TABLE), batch_size=1, beam_width=2,
      max_length=2, start_id=START, end_id=END, top_k=1, attention_size=10)
  np.testing.assert_array_equal(ids.numpy()[0, 0], [C, D])
  np.testing.assert_array_equal(lengths.numpy(), [[2]])
  np.testing.assert_array_equal(attention.numpy()[0, 0], _attention_rows(9, C, max_length=2))
