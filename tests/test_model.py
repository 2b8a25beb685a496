"""The Show-and-Tell training model, its loss and the step-wise decoder."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components import config as config_lib
from components import names
from components.encoder import precision as precision_lib
from components.training import callbacks
from components.training import model as model_lib

VOCAB_SIZE = 12
FEATURE_DIM = 7
SEQUENCE_LENGTH = 7  # START + at most 4 words + END, then PAD
START, END, PAD = names.START_ID, names.END_ID, names.PAD_ID

# What the Transform produces: [START, words..., END, PAD...] of SEQUENCE_LENGTH.
CAPTION_IDS = np.array([
    [START, 4, 5, 6, END, PAD, PAD],
    [START, 7, END, PAD, PAD, PAD, PAD],
    [START, 8, 9, 10, 11, 4, END],
], np.int64)


def _model(num_layers=2, use_image=True, seed=0):
  keras.utils.set_random_seed(seed)
  model = model_lib.build_caption_model(vocab_size=VOCAB_SIZE, feature_dim=FEATURE_DIM,
                                        sequence_length=SEQUENCE_LENGTH, embedding_dim=6, lstm_units=5,
                                        num_layers=num_layers, dropout=0.5, use_image=use_image)
  # Freshly initialised logits are all close to 0; scale them up so that every
  # input visibly moves the loss.
  logits = model.get_layer('logits')
  logits.set_weights([w * 20.0 for w in logits.get_weights()])
  return model


def _image_features(batch_size=len(CAPTION_IDS)):
  return np.random.default_rng(0).normal(size=[batch_size, FEATURE_DIM]).astype(np.float32)


def _inputs(ids=CAPTION_IDS, use_image=True):
  inputs = {model_lib.INPUT_IDS_INPUT: tf.constant(ids[:, :-1])}
  if use_image:
    inputs[names.IMAGE_FEATURES_KEY] = tf.constant(_image_features(len(ids)))
  return inputs


def _log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def test_output_shapes_and_dtypes():
  model = _model()
  logits = model(_inputs(), training=False)
  assert logits.shape == (len(CAPTION_IDS), SEQUENCE_LENGTH - 1, VOCAB_SIZE)
  assert logits.dtype == tf.float32
  assert sorted(model.input_names) == sorted([names.IMAGE_FEATURES_KEY, model_lib.INPUT_IDS_INPUT])
  assert model_lib.summed_caption_loss(CAPTION_IDS[:, 1:], logits).shape == (len(CAPTION_IDS),)


def test_image_changes_the_predictions_and_the_baseline_has_no_image_input():
  model = _model()
  inputs = _inputs()
  other = dict(inputs, **{names.IMAGE_FEATURES_KEY: inputs[names.IMAGE_FEATURES_KEY] + 1.0})
  assert not np.allclose(model(inputs, training=False), model(other, training=False))

  baseline = _model(use_image=False)
  assert baseline.input_names == [model_lib.INPUT_IDS_INPUT]
  logits = baseline(_inputs(use_image=False), training=False)
  assert logits.shape == (len(CAPTION_IDS), SEQUENCE_LENGTH - 1, VOCAB_SIZE)


def test_loss_is_the_hand_computed_sum_over_real_steps():
  model = _model()
  logits = model(_inputs(), training=False).numpy()
  targets = CAPTION_IDS[:, 1:]
  log_probs = _log_softmax(logits.astype(np.float64))
  expected = [-sum(log_probs[i, t, targets[i, t]] for t in range(targets.shape[1]) if targets[i, t] != PAD)
              for i in range(len(targets))]
  loss = model_lib.summed_caption_loss(tf.constant(targets), tf.constant(logits))
  np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


def test_loss_ignores_logits_at_padding_targets():
  logits = np.random.default_rng(1).normal(size=[3, SEQUENCE_LENGTH - 1, VOCAB_SIZE]).astype(np.float32)
  targets = CAPTION_IDS[:, 1:]
  changed = logits.copy()
  changed[targets == PAD] += np.random.default_rng(2).normal(size=changed[targets == PAD].shape) * 10
  loss = model_lib.summed_caption_loss(targets, logits)
  np.testing.assert_allclose(loss, model_lib.summed_caption_loss(targets, changed), rtol=1e-6)
  changed[0, 0, 0] += 5.0  # a real step: the loss must move
  assert not np.allclose(loss, model_lib.summed_caption_loss(targets, changed))


def test_inputs_from_end_on_do_not_change_the_loss():
  """END as an input and every PAD input only ever predict PAD targets."""
  model = _model()
  targets = CAPTION_IDS[:, 1:]
  loss = model_lib.summed_caption_loss(targets, model(_inputs(), training=False))
  changed = CAPTION_IDS.copy()
  changed[0, 4:] = [9, 10, 11]  # END and the PADs after it replaced by words
  changed[1, 2:] = 5
  changed_loss = model_lib.summed_caption_loss(targets, model(_inputs(changed), training=False))
  np.testing.assert_allclose(loss, changed_loss, rtol=1e-6)
  changed[0, 3] = 4  # a real input word: the loss must move
  moved = model_lib.summed_caption_loss(targets, model(_inputs(changed), training=False))
  assert abs(float(moved[0] - loss[0])) > 1e-5  # float32 noise at this size is ~1e-6


def test_keras_averages_the_summed_loss_over_the_batch():
  model = _model()
  model.compile(loss=model_lib.summed_caption_loss)
  logits = model(_inputs(), training=False)
  # What fit/evaluate compute per batch; a Keras mask on the logits would be
  # applied here a second time, as sample weights.
  keras_loss = model.compute_loss(_inputs(), tf.constant(CAPTION_IDS[:, 1:]), logits)
  ours = model_lib.summed_caption_loss(CAPTION_IDS[:, 1:], logits)
  np.testing.assert_allclose(keras_loss, np.mean(ours), rtol=1e-5)


@pytest.mark.parametrize('num_layers', [1, 2, 3])
def test_stacks_one_to_three_lstm_layers(num_layers):
  """Layer 1 reads the 6-d embeddings, each further layer the 5-unit outputs of the one below;
  the decoder carries one (h, c) pair per layer."""
  model = _model(num_layers=num_layers)
  decoder = model_lib.CaptionDecoder(model)
  # LSTM kernels are [input dim, 4 gates x units].
  assert [tuple(lstm.cell.kernel.shape) for lstm in decoder.lstms] == [(6, 20)] + [(5, 20)] * (num_layers - 1)

  states = decoder.initial_state(tf.constant(_image_features()))
  log_probs, states = decoder.step(tf.constant([START] * len(CAPTION_IDS)), states)

  assert len(states) == num_layers
  for h, c in states:
    assert h.shape == c.shape == (len(CAPTION_IDS), 5) and h.dtype == c.dtype == tf.float32
  assert log_probs.shape == (len(CAPTION_IDS), VOCAB_SIZE) and log_probs.dtype == tf.float32
  np.testing.assert_allclose(np.exp(log_probs.numpy()).sum(axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize('num_layers', [0, 4])
def test_rejects_other_layer_counts(num_layers):
  with pytest.raises(ValueError, match='num_layers'):
    _model(num_layers=num_layers)


def _teacher_forced_log_probs(decoder, image_features, ids):
  """Feeds ids[:, :-1] one step at a time: float32 [batch, T, vocab]."""
  states = decoder.initial_state(tf.constant(image_features))
  steps = []
  for t in range(ids.shape[1] - 1):
    log_probs, states = decoder.step(tf.constant(ids[:, t], tf.int32), states)
    steps.append(log_probs.numpy())
  return np.stack(steps, axis=1)


@pytest.mark.parametrize('num_layers,use_image', [(1, True), (3, True), (2, False)])
def test_decoder_steps_reproduce_the_training_model(num_layers, use_image):
  model = _model(num_layers=num_layers, use_image=use_image)
  expected = _log_softmax(model(_inputs(use_image=use_image), training=False).numpy())
  stepped = _teacher_forced_log_probs(model_lib.CaptionDecoder(model), _image_features(), CAPTION_IDS)
  real = CAPTION_IDS[:, 1:] != PAD  # masked steps see different (skipped) inputs
  np.testing.assert_allclose(stepped[real], expected[real], rtol=1e-4, atol=1e-5)


def test_trained_model_decodes_the_caption_of_each_image():
  """A few hundred steps on two images must teach it their captions, end to end through beam search."""
  keras.utils.set_random_seed(0)
  model = model_lib.build_caption_model(vocab_size=VOCAB_SIZE, feature_dim=FEATURE_DIM,
                                        sequence_length=SEQUENCE_LENGTH, embedding_dim=8, lstm_units=16,
                                        dropout=0.0)
  ids = CAPTION_IDS[:2]
  model.compile(optimizer=keras.optimizers.Adam(0.05), loss=model_lib.summed_caption_loss)
  history = model.fit(_inputs(ids), ids[:, 1:], epochs=60, batch_size=2, verbose=0)
  assert history.history['loss'][-1] < 0.05 * history.history['loss'][0]
  decoded, lengths, log_probs = model_lib.CaptionDecoder(model).generate(
      tf.constant(_image_features(2)), beam_width=3, max_length=SEQUENCE_LENGTH - 1)
  np.testing.assert_array_equal(decoded.numpy(), ids[:, 1:])
  np.testing.assert_array_equal(lengths.numpy(), [4, 2])
  assert np.all(log_probs.numpy() > np.log(0.5))


def test_mixed_precision_keeps_float32_outputs():
  keras.mixed_precision.set_global_policy('mixed_float16')
  try:
    model = _model()
    decoder = model_lib.CaptionDecoder(model)
    logits = model(_inputs(), training=False)
    log_probs, states = decoder.step(tf.constant([START] * 3), decoder.initial_state(_image_features()))
    _, _, sequence_log_probs = decoder.generate(tf.constant(_image_features()), beam_width=2, max_length=4)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert model.get_layer('logits').compute_dtype == 'float16'
  assert logits.dtype == tf.float32
  assert log_probs.dtype == tf.float32 and log_probs.shape == (3, VOCAB_SIZE)
  assert states[0][0].dtype == tf.float16
  assert sequence_log_probs.dtype == tf.float32


def _fused(dense_dtype='mixed_bfloat16'):
  """The real-data default's caption model (TrainerConfig: bfloat16 products, fused_training)."""
  return model_lib.build_caption_model(vocab_size=VOCAB_SIZE, feature_dim=FEATURE_DIM,
                                       sequence_length=SEQUENCE_LENGTH, embedding_dim=6, lstm_units=5,
                                       num_layers=2, dropout=0.5, dense_dtype=dense_dtype, fused_lstm=True)


def test_the_bfloat16_fused_model_matches_the_float32_model():
  """The real-data default against float32 and tf_keras' LSTM, on the same weights: the same
  logits at the real steps up to bfloat16's 8 bits, and a step-wise decoder that reproduces it."""
  reference = _model(num_layers=2)
  fast = _fused()
  fast.set_weights(reference.get_weights())
  assert fast.get_layer('logits').compute_dtype == 'bfloat16'
  assert fast.get_layer('lstm_0').matmul_dtype == 'bfloat16'
  real = CAPTION_IDS[:, 1:] != PAD
  expected = reference(_inputs(), training=False).numpy()
  logits = fast(_inputs(), training=False)
  assert logits.dtype == tf.float32
  np.testing.assert_allclose(logits.numpy()[real], expected[real], rtol=0.05, atol=0.1)
  loss = model_lib.summed_caption_loss(CAPTION_IDS[:, 1:], logits).numpy()
  np.testing.assert_allclose(loss, model_lib.summed_caption_loss(CAPTION_IDS[:, 1:], expected).numpy(),
                             rtol=0.02)
  stepped = _teacher_forced_log_probs(model_lib.CaptionDecoder(fast), _image_features(), CAPTION_IDS)
  np.testing.assert_allclose(stepped[real], _log_softmax(logits.numpy())[real], rtol=0.02, atol=0.05)


def test_target_steps_model_gives_the_summed_loss_and_its_gradients():
  """Logits only at the steps with a target: the same loss as summed_caption_loss averaged over
  the batch, and the same gradients for every weight of the shared caption model."""
  caption_model = _fused(dense_dtype=None)
  target_model = model_lib.target_steps_model(caption_model)
  targets = tf.constant(CAPTION_IDS[:, 1:])
  with tf.GradientTape(persistent=True) as tape:
    expected = tf.reduce_mean(model_lib.summed_caption_loss(targets, caption_model(_inputs(), training=False)))
    target_logits = target_model(_inputs(), training=False)
    loss = model_lib.summed_target_loss(targets, target_logits)
  assert target_logits.shape == (int((CAPTION_IDS[:, 1:] != PAD).sum()), VOCAB_SIZE)
  np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-6)
  variables = caption_model.trainable_variables
  assert {id(v) for v in target_model.trainable_variables} == {id(v) for v in variables}
  for gradient, expected_gradient in zip(tape.gradient(loss, variables), tape.gradient(expected, variables)):
    np.testing.assert_allclose(tf.convert_to_tensor(gradient).numpy(),
                               tf.convert_to_tensor(expected_gradient).numpy(), atol=1e-6)


def test_target_steps_model_fails_on_targets_that_do_not_follow_the_inputs():
  """Targets with a PAD where the inputs say a word follows cannot pass for the same steps."""
  target_logits = model_lib.target_steps_model(_fused(dense_dtype=None))(_inputs(), training=False)
  shifted = np.where(CAPTION_IDS[:, 1:] == END, PAD, CAPTION_IDS[:, 1:])
  with pytest.raises(tf.errors.InvalidArgumentError, match='not the steps whose input is neither END nor PAD'):
    model_lib.summed_target_loss(tf.constant(shifted), target_logits)


def test_softmax_cross_entropy_is_tensorflows_with_its_gradient_even_far_from_the_label():
  rng = np.random.default_rng(0)
  logits = rng.normal(scale=3.0, size=[6, VOCAB_SIZE]).astype(np.float32)
  logits[0, 0] = -1000.0  # the label's probability underflows float32: log(p) would be -inf
  logits[1, 1] = 1000.0
  labels = tf.constant([0, 2, 3, 11, 5, 5], tf.int32)
  upstream = tf.constant(rng.uniform(0.5, 2.0, size=6).astype(np.float32))
  results = []
  for cross_entropy in (model_lib.softmax_cross_entropy,
                        lambda l, z: tf.nn.sparse_softmax_cross_entropy_with_logits(labels=l, logits=z)):
    z = tf.constant(logits)
    with tf.GradientTape() as tape:
      tape.watch(z)
      loss = cross_entropy(labels, z)
    results.append((loss.numpy(), tape.gradient(loss, z, output_gradients=upstream).numpy()))
  (loss, gradient), (expected_loss, expected_gradient) = results
  assert np.isfinite(loss).all() and loss[0] > 900
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(gradient, expected_gradient, atol=1e-6)


@pytest.mark.parametrize('precision, policy', [('float32', None), ('bfloat16', 'mixed_bfloat16')])
def test_decoder_precision_sets_the_products_policy(precision, policy):
  assert model_lib.dense_dtype_policy(config_lib.TrainerConfig(decoder_precision=precision)) == policy


def test_auto_decoder_precision_is_bfloat16_only_on_bfloat16_hardware(monkeypatch):
  """Emulated bfloat16 is several times slower: 'auto' follows the hardware, as the encoder's does."""
  for has_bfloat16, policy in ((True, 'mixed_bfloat16'), (False, None)):
    monkeypatch.setattr(precision_lib, 'hardware_has_bfloat16', lambda *_, has=has_bfloat16: has)
    assert model_lib.dense_dtype_policy(config_lib.TrainerConfig()) == policy


def _fused_training_weights(seed):
  """The real-data training path (bfloat16 products, fused) fitted for a few shuffled, dropped-out steps."""
  callbacks.make_deterministic(seed)
  config = config_lib.TrainerConfig(embedding_dim=8, lstm_units=8, decoder_precision='bfloat16', batch_size=2)
  extractor_input = keras.Input([FEATURE_DIM])
  _, training_model = model_lib.build_models(config, VOCAB_SIZE, SEQUENCE_LENGTH,
                                             keras.Model(extractor_input, extractor_input))
  ids = np.tile(CAPTION_IDS, [4, 1])
  inputs = _inputs(ids)
  training_model.fit(inputs, ids[:, 1:], batch_size=config.batch_size, epochs=2, shuffle=True, verbose=0)
  return training_model.get_weights()


def test_the_fused_path_trains_to_the_same_weights_from_the_same_seed():
  """Same-machine determinism holds for the real-data path: bitwise, not merely close."""
  first, again, other_seed = _fused_training_weights(0), _fused_training_weights(0), _fused_training_weights(1)
  assert len(first) == len(again) > 0
  assert all(np.array_equal(a, b) for a, b in zip(first, again))
  assert not all(np.array_equal(a, b) for a, b in zip(first, other_seed))


class _InterruptAtEpoch(keras.callbacks.Callback):
  def __init__(self, epoch):
    super().__init__()
    self._epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self._epoch:
      raise KeyboardInterrupt(f'interrupted at epoch {epoch}')


class _StateAtFirstEpoch(keras.callbacks.Callback):
  """The weights when `fit` begins its first epoch (after any restore), and the optimizer's step
  count after its first batch (its variables are made, and restored, at its first update)."""

  def on_epoch_begin(self, epoch, logs=None):
    if not hasattr(self, 'epoch'):
      self.epoch = epoch
      self.weights = self.model.get_weights()

  def on_train_batch_end(self, batch, logs=None):
    if not hasattr(self, 'iterations_after_first_batch'):
      self.iterations_after_first_batch = int(self.model.optimizer.iterations)


def test_the_fused_path_resumes_from_its_backup_with_adams_state(tmp_path):
  """A training killed after an epoch resumes from BackupAndRestore's checkpoint (as the Trainer's
  TrainingRun does): the weights as they were, and the fused Adam's state with them."""
  ids = np.tile(CAPTION_IDS, [4, 1])
  backup = str(tmp_path / 'backup')

  def fit(seed, *extra_callbacks):
    callbacks.make_deterministic(seed)
    config = config_lib.TrainerConfig(embedding_dim=8, lstm_units=8, decoder_precision='bfloat16')
    extractor_input = keras.Input([FEATURE_DIM])
    _, training_model = model_lib.build_models(config, VOCAB_SIZE, SEQUENCE_LENGTH,
                                               keras.Model(extractor_input, extractor_input))
    state = _StateAtFirstEpoch()
    try:
      training_model.fit(_inputs(ids), ids[:, 1:], batch_size=4, epochs=2, verbose=0,
                         callbacks=[keras.callbacks.BackupAndRestore(backup), state, *extra_callbacks])
    except KeyboardInterrupt:
      pass
    return training_model, state

  interrupted, _ = fit(0, _InterruptAtEpoch(1))
  assert isinstance(interrupted.optimizer, keras.optimizers.legacy.Adam)
  assert int(interrupted.optimizer.iterations) == 3  # one epoch of 12 captions in batches of 4
  _, resumed = fit(1)  # other initial weights: only the backup can make them equal
  assert resumed.epoch == 1
  assert all(np.array_equal(a, b) for a, b in zip(resumed.weights, interrupted.get_weights()))
  assert resumed.iterations_after_first_batch == 4  # Adam's bias correction continues from step 3
