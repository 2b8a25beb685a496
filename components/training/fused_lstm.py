"""An LSTM layer for CPU training: bfloat16 matrix products and a backward pass that batches them.

tf_keras' LSTM cannot train faster on a CPU with bfloat16 units (AMX-BF16,
AVX512-BF16): it refuses the bfloat16 policy, and its gradient, derived step by
step by autodiff, makes two small matrix products per step (the recurrent
kernel's gradient among them, then summed with AddN), which cost more than the
step's own arithmetic. This layer computes the same LSTM (the same gates,
weights and initial zero state, as a `keras.layers.LSTMCell` it owns) over a
fixed number of steps with:

  * the input projection of every step in one product before the loop;
  * per step, only the recurrent product, in `matmul_dtype` (bfloat16 runs on
    the AMX tiles), with the gates, cell and hidden states in float32;
  * a hand-written backward pass (`tf.custom_gradient`) that keeps only the
    sequential product per step (dh = dz R^T) and computes the recurrent
    kernel's gradient as one product over all steps, as cuDNN does.

The cell's weights are the layer's, so `CaptionDecoder` runs the trained layer
one step at a time through `layer.cell`, as it does a tf_keras LSTM.

Masks are accepted and passed on but not applied: the captions are padded at
the end, so the outputs at real steps do not depend on them, and the loss
ignores the padded steps (model.summed_caption_loss).
"""
import tensorflow as tf
import tf_keras as keras


def _gates(z):
  """Pre-activations [n, 4u] in Keras' gate order (i, f, c, o) -> activated gates."""
  i, f, g, o = tf.split(z, 4, axis=1)
  return tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)


def lstm_sequence(projected, recurrent_kernel, matmul_dtype):
  """The LSTM over all steps, from zero states.

  Args:
    projected: float32 [batch, steps, 4 * units], inputs times the kernel plus
      the bias.
    recurrent_kernel: float32 [units, 4 * units].
    matmul_dtype: dtype of the recurrent products (tf.float32 or tf.bfloat16).

  Returns:
    float32 [batch, steps, units]: the hidden state after each step.
  """
  units = recurrent_kernel.shape[0]

  @tf.custom_gradient
  def run(projected, recurrent_kernel):
    recurrent = tf.cast(recurrent_kernel, matmul_dtype)
    batch = tf.shape(projected)[0]
    h = tf.zeros([batch, units])
    c = tf.zeros([batch, units])
    previous_h, saved, outputs = [], [], []
    for step_input in tf.unstack(projected, axis=1):
      previous_h.append(h)
      z = step_input + tf.cast(tf.matmul(tf.cast(h, matmul_dtype), recurrent), tf.float32)
      i, f, g, o = _gates(z)
      c_previous = c
      c = f * c_previous + i * g
      tanh_c = tf.tanh(c)
      h = o * tanh_c
      saved.append((i, f, g, o, c_previous, tanh_c))
      outputs.append(h)

    def grad(d_outputs):
      # Back through the steps: each gate's pre-activation gradient (sigmoid' = s(1 - s),
      # tanh' = 1 - t^2), then dh through the recurrent product; the recurrent kernel's
      # gradient is one product over all steps, from the saved inputs of each step.
      d_steps = tf.unstack(d_outputs, axis=1)
      dh = tf.zeros_like(h)
      dc = tf.zeros_like(c)
      dz_steps = [None] * len(d_steps)
      for t in reversed(range(len(d_steps))):
        i, f, g, o, c_previous, tanh_c = saved[t]
        dh = dh + d_steps[t]
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        dz = tf.concat([dc * g * i * (1.0 - i),
                        dc * c_previous * f * (1.0 - f),
                        dc * i * (1.0 - g * g),
                        dh * tanh_c * o * (1.0 - o)], axis=1)
        dz_steps[t] = dz
        dc = dc * f
        if t:
          dh = tf.cast(tf.matmul(tf.cast(dz, matmul_dtype), recurrent, transpose_b=True), tf.float32)
      d_projected = tf.stack(dz_steps, axis=1)
      d_recurrent = tf.einsum('btu,btk->uk', tf.cast(tf.stack(previous_h, axis=1), matmul_dtype),
                              tf.cast(d_projected, matmul_dtype))
      return d_projected, tf.cast(d_recurrent, tf.float32)

    return tf.stack(outputs, axis=1), grad

  return run(projected, recurrent_kernel)


@keras.saving.register_keras_serializable(package='captioner')
class FusedLSTM(keras.layers.Layer):
  """keras.layers.LSTM(units, return_sequences=True) over a fixed number of steps, for training.

  Args:
    units: hidden size.
    matmul_dtype: 'float32', or 'bfloat16' for the matrix products (the
      weights, states and gates stay float32).
  """

  def __init__(self, units, matmul_dtype='float32', **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.matmul_dtype = matmul_dtype
    self.cell = keras.layers.LSTMCell(units, name='lstm_cell', dtype=self.dtype_policy)
    self.supports_masking = True

  def build(self, input_shape):
    self.cell.build(input_shape[:1] + input_shape[2:])
    super().build(input_shape)

  def call(self, inputs, mask=None):
    del mask  # padding is at the end of each caption: see the module docstring
    matmul_dtype = tf.as_dtype(self.matmul_dtype)
    projected = tf.einsum('btd,dk->btk', tf.cast(inputs, matmul_dtype),
                          tf.cast(self.cell.kernel, matmul_dtype))
    # bias_add: its gradient (BiasAddGrad) takes about half the time of a broadcast add's.
    projected = tf.nn.bias_add(tf.cast(projected, tf.float32), self.cell.bias)
    return lstm_sequence(projected, tf.convert_to_tensor(self.cell.recurrent_kernel), matmul_dtype)

  def compute_mask(self, inputs, mask=None):
    return mask

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units, matmul_dtype=self.matmul_dtype)
    return config
