"""The attention decoder: deterministic soft attention (Xu et al. 2015, "Show, Attend and Tell").

The backbone's grid (pooling 'grid': VGG16's block5_conv3, [grid_h, grid_w,
512]) is L = grid_h * grid_w annotation vectors a_i. At every step the LSTM's
previous hidden state scores each location with an MLP,

    e_ti = v . tanh(W_a a_i + W_h h_{t-1}),   alpha_t = softmax_i(e_ti),
    z_t  = beta_t * sum_i alpha_ti a_i,       beta_t = sigmoid(w_b . h_{t-1}),

and the context z_t enters the LSTM beside the previous word's embedding. The
LSTM's state starts from the mean annotation (h_0, c_0 = tanh(W mean_i a_i)),
as in the paper. Training model (teacher forcing), for ids [START, w1..wN,
END, PAD...] of length `sequence_length`:

    inputs  = ids[:, :-1] = [START, w1, ..., wN, END, PAD...]      (length T)
    targets = ids[:, 1:]  = [w1, ..., wN, END, PAD, PAD...]        (length T)

with one output per input (no image step: the image enters through h_0, c_0
and z_t), logits [batch, T, vocab] for model.summed_caption_loss, the same
loss and batches as Show and Tell's.

Departures from the paper, flagged: the output layer is a linear map of
[h_t, z_t] (the paper's deep output adds the previous word's embedding and a
hidden layer); the doubly stochastic regularisation (every location attended
to about once over the caption) is left out: the embedded datasets' captions
are short, and the paper's gain from it was in BLEU on its larger sets; the
steps after END run (their targets are PAD, which the loss masks) instead of
being skipped by a Keras mask.

`AttentionDecoder` reuses the trained layers one step at a time for beam
search and self-critical sampling, with CaptionDecoder's interface, and also
returns each step's attention weights for the serving output
names.ATTENTION_OUTPUT.
"""
from typing import List, Sequence

import tensorflow as tf
import tf_keras as keras

from components import names
from components.training import beam_search as beam_search_lib

GRID_LAYER = 'grid'
WORD_EMBEDDING = 'word_embedding'
ATTENTION_LSTM = 'attention_lstm'
LOGITS = 'logits'
_FIXED_LENGTH_IDS = 'fixed_length_ids'


@keras.saving.register_keras_serializable(package='captioner')
class AttentionLSTM(keras.layers.Layer):
  """An LSTM whose every step attends over a grid of annotation vectors (module docstring).

  call([annotations float32 [batch, L, C], words float32 [batch, T, E]]) ->
  (outputs float32 [batch, T, units + C]: [h_t, z_t] per step,
   attention float32 [batch, T, L]: alpha_t per step).
  """

  def __init__(self, units, attention_units, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.attention_units = attention_units
    self.cell = keras.layers.LSTMCell(units, name='cell')
    self.project_annotations = keras.layers.Dense(attention_units, name='project_annotations')  # W_a
    self.project_hidden = keras.layers.Dense(attention_units, use_bias=False, name='project_hidden')  # W_h
    self.score = keras.layers.Dense(1, name='score')  # v
    self.gate = keras.layers.Dense(1, activation='sigmoid', name='gate')  # beta
    self.init_h = keras.layers.Dense(units, activation='tanh', name='init_h')
    self.init_c = keras.layers.Dense(units, activation='tanh', name='init_c')

  def build(self, input_shape):
    annotations_shape, words_shape = input_shape
    channels, embedding_dim = int(annotations_shape[-1]), int(words_shape[-1])
    self.project_annotations.build([None, None, channels])
    self.project_hidden.build([None, self.units])
    self.score.build([None, None, self.attention_units])
    self.gate.build([None, self.units])
    self.init_h.build([None, channels])
    self.init_c.build([None, channels])
    self.cell.build([None, embedding_dim + channels])
    super().build(input_shape)

  def initial_state(self, annotations):
    """annotations [n, L, C] -> (h_0 [n, units], c_0 [n, units], projected annotations [n, L, A])."""
    mean = tf.reduce_mean(annotations, axis=1)
    return self.init_h(mean), self.init_c(mean), self.project_annotations(annotations)

  def step(self, word, h, c, annotations, projected):
    """One step: word [n, E], state (h, c), the grid -> (h, c, z_t [n, C], alpha_t [n, L])."""
    scores = self.score(tf.tanh(projected + self.project_hidden(h)[:, tf.newaxis, :]))[:, :, 0]  # [n, L]
    alpha = tf.nn.softmax(scores, axis=-1)
    context = self.gate(h) * tf.reduce_sum(alpha[:, :, tf.newaxis] * annotations, axis=1)  # [n, C]
    _, (h, c) = self.cell(tf.concat([tf.cast(word, context.dtype), context], axis=-1), [h, c])
    return h, c, context, alpha

  def call(self, inputs):
    annotations, words = inputs
    h, c, projected = self.initial_state(annotations)
    outputs, weights = [], []
    for word in tf.unstack(words, axis=1):  # T is static (the model reshapes the ids to it)
      h, c, context, alpha = self.step(word, h, c, annotations, projected)
      outputs.append(tf.concat([h, context], axis=-1))
      weights.append(alpha)
    return tf.stack(outputs, axis=1), tf.stack(weights, axis=1)

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units, attention_units=self.attention_units)
    return config


def build_attention_model(vocab_size: int, grid_shape: Sequence[int], sequence_length: int,
                          embedding_dim: int = 300, lstm_units: int = 512, attention_units: int = 512,
                          dropout: float = 0.3, dense_dtype=None) -> keras.Model:
  """Builds the training (teacher-forcing) model.

  Args:
    vocab_size: number of ids, special tokens included.
    grid_shape: [grid_h, grid_w, channels] of the features (EncoderInfo.grid_shape).
    sequence_length: length of the Transform's padded id sequences; T = sequence_length - 1 steps.
    embedding_dim: size of the word embedding (300 on every runner).
    lstm_units: the LSTM's hidden size.
    attention_units: the hidden size of the attention MLP.
    dropout: rate on the word embeddings and before the vocabulary projection.
    dense_dtype: Keras dtype policy of the word embedding and the vocabulary
      projection (model.dense_dtype_policy), or None; the attention LSTM and
      the logits are float32.

  Returns:
    keras Model: {names.IMAGE_FEATURES_KEY: float32 [batch, grid_h*grid_w*channels],
    'input_ids': int64 [batch, T]} -> logits float32 [batch, T, vocab_size].
  """
  if sequence_length < 2:
    raise ValueError(f'sequence_length must be at least 2 (START and END), got {sequence_length}.')
  grid_h, grid_w, channels = (int(d) for d in grid_shape)
  steps = sequence_length - 1
  image_features = keras.Input(shape=(grid_h * grid_w * channels,), dtype=tf.float32,
                               name=names.IMAGE_FEATURES_KEY)
  input_ids = keras.Input(shape=(steps,), dtype=tf.int64, name=names.INPUT_IDS_INPUT)
  grid = keras.layers.Reshape([grid_h, grid_w, channels], name=GRID_LAYER)(image_features)
  annotations = keras.layers.Reshape([grid_h * grid_w, channels], name='annotations')(grid)
  fixed_ids = keras.layers.Reshape([steps], name=_FIXED_LENGTH_IDS)(input_ids)
  words = keras.layers.Embedding(vocab_size, embedding_dim, name=WORD_EMBEDDING, dtype=dense_dtype)(fixed_ids)
  words = keras.layers.Dropout(dropout, name='dropout_words')(words)
  outputs, _ = AttentionLSTM(lstm_units, attention_units, name=ATTENTION_LSTM, dtype='float32')(
      [annotations, words])
  x = keras.layers.Dropout(dropout, name='dropout_logits')(outputs)
  x = keras.layers.Dense(vocab_size, name=LOGITS, dtype=dense_dtype)(x)
  logits = keras.layers.Activation('linear', dtype='float32', name='logits_float32')(x)
  return keras.Model({names.IMAGE_FEATURES_KEY: image_features, names.INPUT_IDS_INPUT: input_ids}, logits,
                     name='show_attend_and_tell')


def is_attention_model(model: keras.Model) -> bool:
  return ATTENTION_LSTM in {layer.name for layer in model.layers}


class AttentionDecoder(tf.Module):
  """Runs a trained attention model one step at a time (model.CaptionDecoder's interface).

  The states carry the image's annotations and their projection beside (h, c),
  so that repeating and reordering the states (beam search, self-critical
  sampling) keeps each row with its own image.
  """

  def __init__(self, model: keras.Model, name='attention_decoder'):
    super().__init__(name=name)
    self.grid_shape: List[int] = [int(d) for d in model.get_layer(GRID_LAYER).target_shape]
    self.word_embedding = model.get_layer(WORD_EMBEDDING)
    self.attention_lstm = model.get_layer(ATTENTION_LSTM)
    self.output_layer = model.get_layer(LOGITS)
    self.vocab_size = self.output_layer.units

  @property
  def attention_size(self) -> int:
    """Locations attended over: grid_h * grid_w."""
    return self.grid_shape[0] * self.grid_shape[1]

  def initial_state(self, image_features):
    """image_features float32 [n, grid_h*grid_w*C] -> states (h, c, annotations, projected)."""
    annotations = tf.reshape(image_features, [-1, self.attention_size, self.grid_shape[2]])
    h, c, projected = self.attention_lstm.initial_state(annotations)
    return h, c, annotations, projected

  def attend(self, word_ids, states):
    """Feeds one word per row: word_ids int [n] -> (log_probs float32 [n, vocab], states,
    attention float32 [n, L]: where this step looked)."""
    h, c, annotations, projected = states
    h, c, context, alpha = self.attention_lstm.step(self.word_embedding(word_ids), h, c, annotations, projected)
    logits = tf.cast(self.output_layer(tf.concat([h, context], axis=-1)), tf.float32)
    return tf.nn.log_softmax(logits, axis=-1), (h, c, annotations, projected), alpha

  def step(self, word_ids, states):
    """As `attend`, without the weights: (log_probs float32 [n, vocab], states)."""
    log_probs, states, _ = self.attend(word_ids, states)
    return log_probs, states

  def generate(self, image_features, beam_width, max_length, top_k=None):
    """Beam-search captions with their attention (beam_search.beam_search_top_k, with_attention).

    Returns (ids int32 [n, k, max_length], lengths int32 [n, k], log_probs float32 [n, k],
    attention float32 [n, k, max_length, L]), k = top_k or 1 (then without the k axis).
    """
    ids, lengths, log_probs, attention = beam_search_lib.beam_search_top_k(
        initial_states=self.initial_state(image_features), step_fn=self.attend,
        batch_size=tf.shape(image_features)[0], beam_width=beam_width, max_length=max_length,
        start_id=names.START_ID, end_id=names.END_ID, top_k=top_k or 1,
        attention_size=self.attention_size)
    if top_k is None:
      return ids[:, 0], lengths[:, 0], log_probs[:, 0], attention[:, 0]
    return ids, lengths, log_probs, attention
