"""FusedLSTM: tf_keras' LSTM computed for CPU training, checked against tf_keras' own."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from components.training import fused_lstm

BATCH, STEPS, INPUT_DIM, UNITS = 4, 6, 5, 7


def _inputs():
  return tf.constant(np.random.default_rng(0).normal(size=[BATCH, STEPS, INPUT_DIM]).astype(np.float32))


def _pair(matmul_dtype):
  """A tf_keras LSTM and a FusedLSTM with the same (non-trivial) weights."""
  keras.utils.set_random_seed(0)
  reference = keras.layers.LSTM(UNITS, return_sequences=True)
  reference(_inputs())
  reference.set_weights([w + np.random.default_rng(1).normal(scale=0.3, size=w.shape).astype(np.float32)
                         for w in reference.get_weights()])
  fused = fused_lstm.FusedLSTM(UNITS, matmul_dtype)
  fused(_inputs())
  fused.set_weights(reference.get_weights())
  return reference, fused


def _outputs_and_gradients(layer, inputs, mask=None):
  """Outputs, and the gradients of a loss that weighs every output differently."""
  weights = tf.reshape(tf.range(STEPS * UNITS, dtype=tf.float32) / (STEPS * UNITS), [1, STEPS, UNITS])
  with tf.GradientTape() as tape:
    tape.watch(inputs)
    outputs = layer(inputs, mask=mask)
    loss = tf.reduce_sum(tf.sin(outputs * 3.0) * weights)
  return outputs.numpy(), [g.numpy() for g in tape.gradient(loss, [inputs] + layer.trainable_variables)]


@pytest.mark.parametrize('matmul_dtype, tolerance', [('float32', 1e-5), ('bfloat16', 3e-2)])
def test_outputs_and_gradients_are_tf_keras_lstms(matmul_dtype, tolerance):
  """Same weights, same outputs and gradients (inputs, kernel, recurrent kernel, bias); bfloat16
  products only round them (8-bit mantissa, relative to each tensor's largest value)."""
  reference, fused = _pair(matmul_dtype)
  expected, expected_gradients = _outputs_and_gradients(reference, _inputs())
  outputs, gradients = _outputs_and_gradients(fused, _inputs())
  assert outputs.dtype == np.float32 and outputs.shape == (BATCH, STEPS, UNITS)
  np.testing.assert_allclose(outputs, expected, atol=tolerance * np.abs(expected).max())
  assert len(gradients) == len(expected_gradients) == 4
  for gradient, expected_gradient in zip(gradients, expected_gradients):
    np.testing.assert_allclose(gradient, expected_gradient, atol=tolerance * np.abs(expected_gradient).max())


def test_end_padding_does_not_change_the_real_steps():
  """Captions are padded at the end: at the real steps, the unmasked FusedLSTM gives what
  tf_keras' LSTM gives with the padding masked, and so do the gradients a loss on those steps takes."""
  reference, fused = _pair('float32')
  lengths = np.array([STEPS, 4, 1, 2])
  mask = tf.constant(np.arange(STEPS)[None, :] < lengths[:, None])
  inputs = _inputs()
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(inputs)
    real = tf.cast(mask, tf.float32)[:, :, None]
    losses = [tf.reduce_sum(tf.square(layer(inputs, mask=mask)) * real) for layer in (reference, fused)]
  expected = reference(inputs, mask=mask).numpy()
  outputs = fused(inputs, mask=mask).numpy()
  is_real = mask.numpy()
  np.testing.assert_allclose(outputs[is_real], expected[is_real], atol=1e-5)
  assert not np.allclose(outputs[~is_real], expected[~is_real])  # the padded steps differ, unused
  for layer_gradient, expected_gradient in zip(tape.gradient(losses[1], [inputs] + fused.trainable_variables),
                                               tape.gradient(losses[0], [inputs] + reference.trainable_variables)):
    np.testing.assert_allclose(layer_gradient.numpy(), expected_gradient.numpy(), atol=1e-5)


def test_its_cell_steps_through_the_same_lstm():
  """CaptionDecoder runs the trained layer one step at a time through `layer.cell`."""
  _, fused = _pair('float32')
  inputs = _inputs()
  expected = fused(inputs).numpy()
  state = [tf.zeros([BATCH, UNITS])] * 2
  for step in range(STEPS):
    output, state = fused.cell(inputs[:, step], state)
    np.testing.assert_allclose(output.numpy(), expected[:, step], atol=1e-5)


def test_config_round_trip_and_weights_in_float32():
  _, fused = _pair('bfloat16')
  rebuilt = fused_lstm.FusedLSTM.from_config(fused.get_config())
  assert (rebuilt.units, rebuilt.matmul_dtype) == (UNITS, 'bfloat16')
  assert [w.dtype for w in fused.weights] == [tf.float32] * 3
  assert [tuple(w.shape) for w in fused.weights] == [(INPUT_DIM, 4 * UNITS), (UNITS, 4 * UNITS), (4 * UNITS,)]
