"""Beam search in pure TensorFlow, so it runs inside the exported serving graph.

Show-and-Tell wants the most probable sentence, so hypotheses are ranked by
their total log-probability (the words and END), with no length normalisation.

At every step each live beam is extended by every word and the `beam_width`
best extensions overall are kept (so `beam_width=1` is exactly greedy
decoding). An extension ending in END is finished: it joins the pool of the
`beam_width` best finished captions and stops growing; its slot among the live
beams stays empty for that step. Because log-probabilities are <= 0, a live
beam can only lose probability, so the search stops as soon as every batch
element's best finished caption is at least as probable as its best live beam;
this changes no result. If nothing finished within `max_length` steps, the best
unfinished beam is returned.

`beam_search_top_k` returns the `top_k` best finished captions (top_k <=
beam_width; the search then runs until the k-th best finished caption is at
least as probable as every live beam). Fewer than top_k finished: the
missing ones are empty with log-probability -inf (except the best, which
falls back to the best unfinished beam as above).

With `attention_size`, the step function also says where each step looked
(an attention decoder's weights over its grid): every beam keeps the weights
of the steps that made its ids, reordered with the beam, and the search
returns them beside the ids.
"""
from typing import Any, NamedTuple

import tensorflow as tf

_NEG_INF = float('-inf')


class _Beams(NamedTuple):
  """The search's state between two steps."""
  step: Any  # int32 []: ids generated so far
  alive_log_probs: Any  # float32 [batch, beam]; -inf for an empty slot
  alive_ids: Any  # int32 [batch, beam, max_length]
  finished_log_probs: Any  # float32 [batch, beam], best first; -inf for an empty slot
  finished_ids: Any  # int32 [batch, beam, max_length]
  last_ids: Any  # int32 [batch*beam]: the ids the next step feeds
  states: Any  # the decoder states, nested [batch*beam, ...]
  alive_attention: Any  # float32 [batch, beam, max_length, attention_size]; size 0 without attention
  finished_attention: Any  # float32 [batch, beam, max_length, attention_size]


def _gather_beams(nested, beam_indices, batch_size, beam_width):
  """Reorders [batch*beam, ...] tensors so that row (b, k) comes from beam beam_indices[b, k]."""
  offsets = tf.range(batch_size)[:, tf.newaxis] * beam_width  # [batch, 1]
  flat_indices = tf.reshape(beam_indices + offsets, [-1])  # [batch*beam]
  return tf.nest.map_structure(lambda t: tf.gather(t, flat_indices), nested)


def beam_search(initial_states, step_fn, batch_size, beam_width, max_length, start_id, end_id):
  """Finds, per batch element, the most probable sequence ending in END.

  Args:
    initial_states: nested structure of tensors [batch, ...]: the decoder state
      after the image step. They are repeated to [batch*beam_width, ...].
    step_fn: (word_ids int32 [batch*beam_width], states) -> (log_probs float
      [batch*beam_width, vocab], new states of the same structure and shapes).
    batch_size: int or scalar int32 tensor.
    beam_width: python int >= 1; 1 is greedy decoding.
    max_length: python int >= 1, the maximum number of generated ids, END included.
    start_id: the id fed at the first step.
    end_id: the id that finishes a sequence.

  Returns:
    ids: int32 [batch, max_length], generated ids (END included when the
      sequence finished), then zeros.
    lengths: int32 [batch], number of generated ids, END included.
    log_probs: float32 [batch], sum of the log-probabilities of those ids.
  """
  ids, lengths, log_probs = beam_search_top_k(initial_states, step_fn, batch_size, beam_width, max_length,
                                              start_id, end_id, top_k=1)
  return ids[:, 0], lengths[:, 0], log_probs[:, 0]


def beam_search_top_k(initial_states, step_fn, batch_size, beam_width, max_length, start_id, end_id, top_k,
                      attention_size=None):
  """Finds, per batch element, the `top_k` most probable sequences ending in END, best first.

  Args: as beam_search, plus
    top_k: python int, 1 <= top_k <= beam_width.
    attention_size: None, or python int L: then step_fn returns (log_probs,
      new states, attention float [batch*beam_width, L]), the weights of the
      step that scored log_probs, and the result has a fourth element.

  Returns:
    ids: int32 [batch, top_k, max_length], generated ids (END included when
      the sequence finished), then zeros; all zeros for a missing one.
    lengths: int32 [batch, top_k], number of generated ids, END included (0 for a missing one).
    log_probs: float32 [batch, top_k], sum of the log-probabilities of those
      ids, descending; -inf for a missing one.
    attention (with attention_size only): float32 [batch, top_k, max_length,
      attention_size], row t the weights of the step that generated id t of
      that sequence; zeros after its last id and for a missing one.
  """
  _check_arguments(beam_width, max_length, top_k)
  if attention_size is None:
    with_attention = lambda ids, states: (*step_fn(ids, states), tf.zeros([tf.shape(ids)[0], 0]))
  else:
    with_attention = step_fn

  def not_done(beams):
    # finished_log_probs is sorted, so column top_k - 1 is the k-th best finished.
    can_improve = tf.reduce_max(beams.alive_log_probs, axis=1) > beams.finished_log_probs[:, top_k - 1]
    return tf.logical_and(beams.step < max_length, tf.reduce_any(can_improve))

  def extend(beams):
    return (_extend(beams, with_attention, batch_size, beam_width, max_length, end_id, attention_size or 0),)

  first = _first_beams(initial_states, batch_size, beam_width, max_length, start_id, attention_size or 0)
  [beams] = tf.while_loop(not_done, extend, (first,), maximum_iterations=max_length)
  result = _best_finished(beams, top_k, end_id)
  return result if attention_size is not None else result[:3]


def _check_arguments(beam_width, max_length, top_k):
  if beam_width < 1:
    raise ValueError(f'beam_width must be at least 1, got {beam_width}.')
  if not 1 <= top_k <= beam_width:
    raise ValueError(f'top_k must be between 1 and beam_width ({beam_width}), got {top_k}.')
  if max_length < 1:
    raise ValueError(f'max_length must be at least 1, got {max_length}.')


def _first_beams(initial_states, batch_size, beam_width, max_length, start_id, attention_size) -> _Beams:
  """Before the first step: one live beam per batch element, fed START, nothing finished."""
  neg_inf = tf.constant(_NEG_INF, tf.float32)
  # Only beam 0 is live at first; the others would duplicate it.
  first_row = tf.concat([[0.0], tf.fill([beam_width - 1], neg_inf)], axis=0)
  return _Beams(
      step=tf.constant(0),
      alive_log_probs=tf.tile(first_row[tf.newaxis, :], [batch_size, 1]),
      alive_ids=tf.zeros([batch_size, beam_width, max_length], tf.int32),
      finished_log_probs=tf.fill([batch_size, beam_width], neg_inf),
      finished_ids=tf.zeros([batch_size, beam_width, max_length], tf.int32),
      last_ids=tf.fill([batch_size * beam_width], tf.cast(start_id, tf.int32)),
      states=tf.nest.map_structure(lambda t: tf.repeat(t, beam_width, axis=0), initial_states),
      alive_attention=tf.zeros([batch_size, beam_width, max_length, attention_size]),
      finished_attention=tf.zeros([batch_size, beam_width, max_length, attention_size]))


def _extend(beams: _Beams, step_fn, batch_size, beam_width, max_length, end_id, attention_size) -> _Beams:
  """One step: every live beam extended by every word, the `beam_width` best kept; those
  ending in END move into the finished pool (which keeps its `beam_width` best)."""
  neg_inf = tf.constant(_NEG_INF, tf.float32)
  log_probs, new_states, attention = step_fn(beams.last_ids, beams.states)
  log_probs = tf.cast(log_probs, tf.float32)
  vocab_size = tf.shape(log_probs)[-1]
  scores = (beams.alive_log_probs[:, :, tf.newaxis]
            + tf.reshape(log_probs, [batch_size, beam_width, vocab_size]))
  top_scores, top_indices = tf.math.top_k(tf.reshape(scores, [batch_size, -1]), k=beam_width)
  beam_indices = top_indices // vocab_size  # [batch, beam]
  word_ids = top_indices % vocab_size  # [batch, beam]
  position = tf.one_hot(beams.step, max_length, dtype=tf.int32)  # [max_length]
  candidate_ids = (tf.gather(beams.alive_ids, beam_indices, batch_dims=1)
                   + word_ids[:, :, tf.newaxis] * position)  # [batch, beam, max_length]
  # The step's weights belong to the parent beam, as its log-probabilities do.
  attention = tf.reshape(tf.cast(attention, tf.float32), [batch_size, beam_width, attention_size])
  candidate_attention = (tf.gather(beams.alive_attention, beam_indices, batch_dims=1)
                         + tf.gather(attention, beam_indices, batch_dims=1)[:, :, tf.newaxis, :]
                         * tf.cast(position, tf.float32)[:, tf.newaxis])  # [batch, beam, max_length, L]

  is_end = tf.equal(word_ids, end_id)
  pool_log_probs = tf.concat([beams.finished_log_probs, tf.where(is_end, top_scores, neg_inf)], axis=1)
  pool_ids = tf.concat([beams.finished_ids, candidate_ids], axis=1)  # [batch, 2*beam, max_length]
  pool_attention = tf.concat([beams.finished_attention, candidate_attention], axis=1)
  finished_log_probs, kept = tf.math.top_k(pool_log_probs, k=beam_width)
  return _Beams(
      step=beams.step + 1,
      alive_log_probs=tf.where(is_end, neg_inf, top_scores),
      alive_ids=candidate_ids,
      finished_log_probs=finished_log_probs,
      finished_ids=tf.gather(pool_ids, kept, batch_dims=1),
      last_ids=tf.reshape(word_ids, [-1]),
      states=_gather_beams(new_states, beam_indices, batch_size, beam_width),
      alive_attention=candidate_attention,
      finished_attention=tf.gather(pool_attention, kept, batch_dims=1))


def _best_finished(beams: _Beams, top_k, end_id):
  """(ids, lengths, log_probs, attention) of the `top_k` best finished sequences (see
  beam_search_top_k); the best unfinished beam stands in for the first where nothing finished."""
  neg_inf = tf.constant(_NEG_INF, tf.float32)
  # The finished pool is sorted by top_k; live slots emptied by END are not.
  finished_log_probs, finished_ids = beams.finished_log_probs[:, :top_k], beams.finished_ids[:, :top_k]
  best_alive = tf.argmax(beams.alive_log_probs, axis=1, output_type=tf.int32)  # [batch]
  any_finished = finished_log_probs[:, 0] > neg_inf  # [batch]
  is_first = tf.equal(tf.range(top_k), 0)[tf.newaxis, :]  # [1, top_k]
  use_alive = tf.logical_and(is_first, tf.logical_not(any_finished)[:, tf.newaxis])  # [batch, top_k]
  ids = tf.where(use_alive[:, :, tf.newaxis],
                 tf.gather(beams.alive_ids, best_alive, batch_dims=1)[:, tf.newaxis, :], finished_ids)
  attention = tf.where(use_alive[:, :, tf.newaxis, tf.newaxis],
                       tf.gather(beams.alive_attention, best_alive, batch_dims=1)[:, tf.newaxis],
                       beams.finished_attention[:, :top_k])
  log_probs = tf.where(use_alive, tf.gather(beams.alive_log_probs, best_alive, batch_dims=1)[:, tf.newaxis],
                       finished_log_probs)
  is_end = tf.equal(ids, end_id)  # [batch, top_k, max_length]
  end_position = tf.argmax(tf.cast(is_end, tf.int32), axis=2, output_type=tf.int32)
  lengths = tf.where(tf.reduce_any(is_end, axis=2), end_position + 1,
                     tf.where(log_probs > neg_inf, beams.step, 0))
  return ids, lengths, log_probs, attention
