"""Tests of the self-critical stage's parts on tiny inputs: the reward, the loss, the sampler.

The stage run end to end by the Trainer (scst_epochs=1, its SavedModel loaded
and called) is tested in tests/test_trainer.py, on that module's fixtures.
"""
import numpy as np
import pytest
import tensorflow as tf
from pycocoevalcap.cider.cider import Cider

from components import config as config_lib
from components import names
from components.training import cider_reward
from components.training import model as model_lib
from components.training import scst

END, PAD = names.END_ID, names.PAD_ID
VOCAB = 12  # ids 4..11 are words


def _padded(captions, width):
  """Word-id lists -> [len, width] ids, each caption followed by END then PAD (as sampled)."""
  ids = np.full((len(captions), width), PAD, np.int64)
  for row, caption in enumerate(captions):
    ids[row, :len(caption)] = caption
    if len(caption) < width:
      ids[row, len(caption)] = END
  return ids


def _random_corpus(rng, images):
  references = [[rng.integers(4, VOCAB, rng.integers(1, 9)) for _ in range(rng.integers(1, 6))]
                for _ in range(images)]
  # Every third candidate copies a reference; the others are random, some empty.
  candidates = [references[i][0] if i % 3 == 0 else rng.integers(4, VOCAB, rng.integers(0, 10))
                for i in range(images)]
  return references, candidates


def test_cider_d_equals_the_coco_toolkits_on_a_small_corpus():
  """Same references as document frequencies and as targets: pycocoevalcap's Cider (the evaluator's judge)."""
  references, candidates = _random_corpus(np.random.default_rng(0), 60)
  text = lambda ids: ' '.join(f'w{i}' for i in ids)
  _, expected = Cider().compute_score({i: [text(r) for r in refs] for i, refs in enumerate(references)},
                                      {i: [text(c)] for i, c in enumerate(candidates)})
  got = cider_reward.Corpus(references, VOCAB).scores(
      np.arange(60), *cider_reward.words_and_lengths(_padded(candidates, 12)))
  assert np.ptp(expected) > 1  # a corpus that tells captions apart
  np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_a_caption_equal_to_its_references_beats_a_wrong_one():
  references = [[np.array([4, 5, 6, 7])] * 2, [np.array([8, 9, 10, 11])] * 2, [np.array([4, 9, 6, 11])]]
  corpus = cider_reward.Corpus(references, VOCAB)
  right, wrong, partial = [4, 5, 6, 7], [8, 9, 10, 11], [4, 5, 6]
  rewards = corpus.scores([0, 0, 0], *cider_reward.words_and_lengths(_padded([right, wrong, partial], 6)))
  assert rewards[0] > rewards[2] > rewards[1] == 0, rewards
  # Words after END do not count.
  with_tail = _padded([right], 6)
  with_tail[0, 5] = 9
  assert corpus.scores([0], *cider_reward.words_and_lengths(with_tail)) == pytest.approx(rewards[0])


def test_references_are_read_up_to_end():
  """The Transform's ids: START, words, END, PAD; the words are ids[1:] before END."""
  ids = np.array([[names.START_ID, 4, 5, END, PAD], [names.START_ID, 6, 7, 8, 9]])
  words, lengths = cider_reward.words_and_lengths(ids[:, 1:])
  assert [list(w[:n]) for w, n in zip(words, lengths)] == [[4, 5], [6, 7, 8, 9]]


def _logits_and_gradient(advantages, sample_ids, seed=0):
  logits = tf.Variable(tf.random.stateless_normal([len(advantages), sample_ids.shape[1], VOCAB], [seed, 1]))
  with tf.GradientTape() as tape:
    loss = scst.policy_gradient_loss(logits, tf.constant(sample_ids), tf.constant(advantages, tf.float32))
  return logits, tape.gradient(loss, logits)


def _log_prob(logits, sample_ids):
  """log p(sample) over the words up to END: what the stage raises or lowers."""
  log_probs = tf.nn.log_softmax(logits).numpy()
  taken = np.take_along_axis(log_probs, sample_ids[:, :, np.newaxis], axis=2)[:, :, 0]
  return (taken * (sample_ids != PAD)).sum(axis=1)


def test_the_loss_raises_a_rewarded_samples_log_probability_and_lowers_a_punished_one():
  sample_ids = _padded([[4, 5, 6], [7, 8]], 5).astype(np.int32)
  logits, gradient = _logits_and_gradient([1.0, -1.0], sample_ids)
  before = _log_prob(logits, sample_ids)
  # The gradient check: the loss's gradient is -(advantage / n) d log p(sample) / d logits.
  with tf.GradientTape() as tape:
    log_p = tf.reduce_sum(tf.constant([0.5, -0.5]) * -tf.reduce_sum(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=sample_ids, logits=logits)
        * (sample_ids != PAD), axis=1))
  np.testing.assert_allclose(gradient.numpy(), -tape.gradient(log_p, logits).numpy(), atol=1e-7)
  logits.assign_sub(0.1 * gradient)  # one gradient-descent step on the loss
  after = _log_prob(logits, sample_ids)
  assert after[0] > before[0] and after[1] < before[1], (before, after)


def test_steps_after_end_carry_no_gradient():
  sample_ids = _padded([[4, 5], [6, 7, 8, 9]], 6).astype(np.int32)  # END at step 2 and 4, then PAD
  _, gradient = _logits_and_gradient([1.0, 2.0], sample_ids)
  per_step = np.abs(gradient.numpy()).sum(axis=2)
  assert np.all(per_step[0, :3] > 0) and np.all(per_step[0, 3:] == 0), per_step
  assert np.all(per_step[1, :5] > 0) and np.all(per_step[1, 5:] == 0), per_step
  # A zero advantage: no gradient at all.
  _, none = _logits_and_gradient([0.0, 0.0], sample_ids)
  assert not np.any(none.numpy())


@pytest.fixture
def tiny_model():
  tf.keras.utils.set_random_seed(0)
  return model_lib.build_caption_model(VOCAB, feature_dim=6, sequence_length=8, embedding_dim=8, lstm_units=8)


def _set_special_bias(model, value):
  """Adds `value` to the logits of PAD and START (a trained model makes them unlikely)."""
  bias = model.get_layer('logits').bias
  bias.assign(bias + tf.one_hot([PAD, names.START_ID], VOCAB, on_value=value).numpy().sum(axis=0))


def test_the_sampler_gives_each_image_its_greedy_caption_then_samples(tiny_model):
  _set_special_bias(tiny_model, -20.0)  # so that beam search (which allows them) is comparable
  decoder = model_lib.CaptionDecoder(tiny_model)
  image_features = tf.random.stateless_normal([3, 6], [0, 2])
  seed = tf.constant([0, 1])
  ids = scst.sample_captions(decoder, image_features, 4, 7, seed).numpy()
  assert ids.shape == (15, 7)
  greedy, _, _ = decoder.generate(image_features, beam_width=1, max_length=7)
  np.testing.assert_array_equal(ids[::5], greedy.numpy())  # beam width 1 is greedy decoding
  assert len({tuple(row) for row in ids}) > 3, ids  # the samples differ
  np.testing.assert_array_equal(scst.sample_captions(decoder, image_features, 4, 7, seed).numpy(), ids)


def test_the_sampler_never_chooses_pad_or_start_and_pads_after_end(tiny_model):
  _set_special_bias(tiny_model, 20.0)  # an untrained model that would say little else
  ids = scst.sample_captions(model_lib.CaptionDecoder(tiny_model), tf.random.stateless_normal([8, 6], [0, 3]),
                             4, 7, tf.constant([0, 1])).numpy()
  assert names.START_ID not in ids
  words, lengths = cider_reward.words_and_lengths(ids)
  assert lengths.max() > 0
  for row, length in zip(ids, lengths):
    assert PAD not in row[:length]
    assert row[length:].tolist() in ([], [END] + [PAD] * (len(row) - length - 1)), row


def test_the_stage_refuses_what_it_cannot_train():
  with pytest.raises(ValueError, match='cached image features'):
    scst.check_config(config_lib.TrainerConfig(scst_epochs=1, augment=True))
  with pytest.raises(ValueError, match='cached image features'):
    scst.check_config(config_lib.TrainerConfig(scst_epochs=1, use_image=False))
  scst.check_config(config_lib.TrainerConfig(augment=True))  # no stage, nothing to refuse
