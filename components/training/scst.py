"""Self-critical sequence training (Rennie et al., CVPR 2017, arXiv 1612.00563) on CIDEr-D.

Why: cross-entropy teaches the next word given the true previous words, but
the captioner is judged on whole captions it generates itself, by CIDEr-D and
BLEU. This stage, run after cross-entropy (`TrainerConfig.scst_epochs`),
optimises the metric on the model's own captions with REINFORCE: for each
training image it samples `scst_samples` captions (multinomial, temperature
1) and decodes its greedy caption, rewards each by CIDEr-D against the image's
training references (cider_reward.Corpus, document frequencies from the train
split), and raises the log-probability of the samples that beat the greedy
caption, lowers that of those that do not. The greedy caption's reward is the
baseline, so no value network is needed and only captions better than what
the model would say at test time are encouraged.

Runs from the cached image features (the cross-entropy epochs' input), in two
graphs per step: `sample_captions` decodes greedy and sampled captions of a
batch in one tf.function, then, once NumPy has scored them, the gradient step
feeds the sampled words back through the caption model (teacher forcing on the
samples), whose summed cross-entropy weighted by the advantage is the policy
gradient loss. Dropout is off in both, so the gradient is that of the
distribution that was sampled. Words after a sample's END are PAD and masked,
as in cross-entropy. The exported model is the same graph: beam search over
the fine-tuned weights. Not done: loss scaling for float16 (`mixed_precision`
on a GPU); the stage has only run in float32 on CPUs.
"""
import time
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from components import config as config_lib
from components import names
from components import progress
from components.training import cider_reward
from components.training import model as model_lib


def check_config(config: config_lib.TrainerConfig) -> None:
  """ValueError, before any training, if the stage is asked for where it cannot run."""
  if config.scst_epochs and (config.augment or not config.use_image):
    raise ValueError('Self-critical training (scst_epochs > 0) trains from the cached image features: '
                     'it needs use_image=True and augment=False.')
  if config.scst_epochs and config.scst_samples < 1:
    raise ValueError(f'scst_samples must be at least 1, got {config.scst_samples}.')


def features_and_references(per_image: tf.data.Dataset) -> Tuple[np.ndarray, List[List[np.ndarray]]]:
  """(features [images, D], per image its references' word ids) from datasets.with_cached_features'
  (features, caption ids [captions, L]) elements; the words are ids[1:] up to END."""
  vectors, references = [], []
  for vector, ids in per_image.as_numpy_iterator():
    words, lengths = cider_reward.words_and_lengths(ids[:, 1:])
    vectors.append(vector)
    references.append([row[:length] for row, length in zip(words, lengths)])
  return np.stack(vectors), references


def sample_captions(decoder: model_lib.CaptionDecoder, image_features: tf.Tensor, samples: int,
                    max_length: int, seed: tf.Tensor) -> tf.Tensor:
  """Per image, its greedy caption then `samples` sampled ones: int32 [images * (samples + 1), max_length].

  Row i * (samples + 1) is image i's greedy caption; a caption's words end
  with END, then PAD. PAD and START are never chosen (neither is ever a
  target in training). `seed` (int32 [2]) makes the draws repeatable.
  """
  rows_per_image = samples + 1
  states = tf.nest.map_structure(lambda t: tf.repeat(t, rows_per_image, axis=0),
                                 decoder.initial_state(image_features))
  rows = tf.shape(image_features)[0] * rows_per_image
  is_greedy = tf.equal(tf.range(rows) % rows_per_image, 0)
  never = tf.one_hot([names.PAD_ID, names.START_ID], decoder.vocab_size, on_value=-1e9)
  never = tf.reduce_sum(never, axis=0)[tf.newaxis, :]
  words = tf.fill([rows], tf.constant(names.START_ID, tf.int32))
  finished = tf.zeros([rows], tf.bool)
  written = tf.TensorArray(tf.int32, size=max_length)
  for step in tf.range(max_length):
    log_probs, states = decoder.step(words, states)
    logits = log_probs + never
    sampled = tf.random.stateless_categorical(
        logits, 1, tf.random.experimental.stateless_fold_in(seed, step), dtype=tf.int32)[:, 0]
    words = tf.where(is_greedy, tf.argmax(logits, axis=-1, output_type=tf.int32), sampled)
    words = tf.where(finished, names.PAD_ID, words)
    written = written.write(step, words)
    finished = tf.logical_or(finished, tf.equal(words, names.END_ID))
  return tf.transpose(written.stack())


def teacher_inputs(sample_ids: tf.Tensor) -> tf.Tensor:
  """The caption model's input ids for sampled words [n, T]: START, then the words but the last."""
  start = tf.fill([tf.shape(sample_ids)[0], 1], tf.constant(names.START_ID, sample_ids.dtype))
  return tf.cast(tf.concat([start, sample_ids[:, :-1]], axis=1), tf.int64)


def policy_gradient_loss(logits: tf.Tensor, sample_ids: tf.Tensor, advantages: tf.Tensor) -> tf.Tensor:
  """REINFORCE with a baseline: mean over samples of -(reward - baseline) * log p(sample).

  log p(sample) sums the log-probabilities of its words up to END (the
  cross-entropy of model.summed_caption_loss, whose PAD targets, everything
  after END, carry no gradient). Minimising it raises the probability of a
  sample with a positive advantage and lowers that of one with a negative.

  Args:
    logits: float [n, T, vocab] of the caption model fed teacher_inputs(sample_ids).
    sample_ids: int [n, T] sampled words, END then PAD.
    advantages: float [n], reward of the sample minus the greedy caption's.
  """
  return tf.reduce_mean(tf.cast(advantages, tf.float32) * model_lib.summed_caption_loss(sample_ids, logits))


class _Stage:
  """The stage's two tf.functions and its optimizer, built once for a caption model."""

  def __init__(self, caption_model: keras.Model, config: config_lib.TrainerConfig, feature_dim: int,
               max_length: int, strategy: tf.distribute.Strategy):
    self._model, self._strategy = caption_model, strategy
    decoder = model_lib.step_decoder(caption_model)
    with strategy.scope():
      self._optimizer = keras.optimizers.Adam(config.scst_learning_rate)
    feature_spec = tf.TensorSpec([None, feature_dim], tf.float32)
    self.sample = tf.function(
        lambda image_features, seed: sample_captions(decoder, image_features, config.scst_samples,
                                                     max_length, seed),
        input_signature=[feature_spec, tf.TensorSpec([2], tf.int32)])
    self.train_step = tf.function(self._train_step, input_signature=[
        feature_spec, tf.TensorSpec([None, max_length], tf.int32), tf.TensorSpec([None], tf.float32)])

  def _train_step(self, image_features, sample_ids, advantages):
    """One policy-gradient step; every replica gets the whole batch, so each takes its share of the loss."""
    def replica_step():
      with tf.GradientTape() as tape:
        logits = self._model({names.IMAGE_FEATURES_KEY: image_features,
                              model_lib.INPUT_IDS_INPUT: teacher_inputs(sample_ids)}, training=False)
        loss = policy_gradient_loss(logits, sample_ids, advantages)
        share = loss / self._strategy.num_replicas_in_sync
      variables = self._model.trainable_variables
      gradients = tape.gradient(share, variables)
      self._optimizer.apply_gradients(zip(gradients, variables))
      return loss
    return self._strategy.reduce(tf.distribute.ReduceOp.MEAN, self._strategy.run(replica_step), axis=None)


def _epoch(stage: _Stage, corpus: cider_reward.Corpus, vectors: np.ndarray, config: config_lib.TrainerConfig,
           epoch: int) -> Dict[str, float]:
  """One pass over the training images in a seeded order; returns the epoch's mean rewards and loss."""
  rows_per_image = config.scst_samples + 1
  order = np.random.default_rng([config.seed, epoch]).permutation(len(vectors))
  sums = np.zeros(3)
  for step, start in enumerate(range(0, len(order), config.batch_size)):
    images = order[start:start + config.batch_size]
    seed = tf.constant([epoch, step], tf.int32) + config.seed * 7919
    ids = stage.sample(vectors[images], seed).numpy()
    rewards = corpus.scores(np.repeat(images, rows_per_image), *cider_reward.words_and_lengths(ids))
    rewards = rewards.reshape(len(images), rows_per_image)
    advantages = (rewards[:, 1:] - rewards[:, :1]).reshape(-1)
    sampled = ids.reshape(len(images), rows_per_image, -1)[:, 1:].reshape(len(advantages), -1)
    loss = stage.train_step(np.repeat(vectors[images], config.scst_samples, axis=0), sampled,
                            advantages.astype(np.float32))
    sums += len(images) * np.array([rewards[:, 1:].mean(), rewards[:, 0].mean(), float(loss)])
  sample_cider, greedy_cider, loss = sums / len(order)
  return {'sample_cider': sample_cider, 'greedy_cider': greedy_cider, 'loss': loss}


def fine_tune(caption_model: keras.Model, config: config_lib.TrainerConfig, train_per_image: tf.data.Dataset,
              vocab_size: int, max_length: int, strategy: tf.distribute.Strategy,
              label: str) -> Dict[str, List[float]]:
  """Runs `config.scst_epochs` epochs of the stage on `caption_model`'s weights, in place.

  Args:
    train_per_image: the train split as datasets.with_cached_features gives it
      (features, caption ids [captions, L]) per image: its captions are the
      references, and they give the document frequencies.
    max_length: ids a caption may have, END included (the exporter's max_length).
    label: the Trainer's name, for the progress lines.

  Returns:
    Per epoch: 'sample_cider' and 'greedy_cider' (mean train-split CIDEr-D of
    the sampled and the greedy captions while the epoch trained), 'loss',
    'seconds'.
  """
  vectors, references = features_and_references(train_per_image)
  corpus = cider_reward.Corpus(references, vocab_size)
  stage = _Stage(caption_model, config, vectors.shape[1], max_length, strategy)
  history = {'sample_cider': [], 'greedy_cider': [], 'loss': [], 'seconds': []}
  for epoch in range(config.scst_epochs):
    start = time.monotonic()
    figures = _epoch(stage, corpus, vectors, config, epoch)
    figures['seconds'] = time.monotonic() - start
    for key, value in figures.items():
      history[key].append(float(value))
    progress.logger.info('  %s self-critical epoch %d/%d: train CIDEr-D of samples %.4f, of greedy '
                         'captions %.4f, %.1f s', label, epoch + 1, config.scst_epochs,
                         figures['sample_cider'], figures['greedy_cider'], figures['seconds'])
  return history
