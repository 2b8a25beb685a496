"""The Show-and-Tell decoder (Vinyals et al. 2014), its loss and a step-wise decoder.

Training model (teacher forcing), for a caption of N words encoded by the
Transform as ids [START, w1..wN, END, PAD...] of length `sequence_length`:

    inputs  = ids[:, :-1] = [START, w1, ..., wN, END, PAD...]      (length T)
    targets = ids[:, 1:]  = [w1, ..., wN, END, PAD, PAD...]        (length T)

    LSTM inputs:  [image_embedding, emb(START), emb(w1), ..., emb(wN), emb(END), ...]
    LSTM outputs: [dropped,         -> w1,      -> w2,   ..., -> END,  -> PAD  ...]

The image embedding (features -> Dense(300)) is only the t=0 input; the output
at t=0 predicts nothing and is dropped so that logits align with targets. END
as an input only ever has PAD as its target, which the loss masks, so no
prediction is ever made from END. PAD inputs are masked (`mask_zero`), so the
LSTM skips them.

With `use_image=False` the same decoder is the captions-only language model
(the baseline): a learned constant vector replaces the image
embedding at t=0 and the model has no image input.

`CaptionDecoder` reuses the trained layers one step at a time for beam search;
it is a tf.Module so that a SavedModel holding it also holds their variables.
"""
from typing import Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from components import config as config_lib
from components import names
from components.encoder import augmentation
from components.encoder import precision as precision_lib
from components.training import attention as attention_lib
from components.training import beam_search as beam_search_lib
from components.training import fused_lstm as fused_lstm_lib

INPUT_IDS_INPUT = names.INPUT_IDS_INPUT  # int64 [batch, sequence_length - 1]
MAX_LAYERS = 3

_IMAGE_EMBEDDING = 'image_embedding'
_START_EMBEDDING = 'start_embedding'
_WORD_EMBEDDING = 'word_embedding'
_LOGITS = 'logits'
_LOGITS_FLOAT32 = 'logits_float32'
_DROPOUT_LOGITS = 'dropout_logits'
_DROP_IMAGE_STEP = 'drop_image_step'
_FIXED_LENGTH_IDS = 'fixed_length_ids'


def _lstm_name(index):
  return f'lstm_{index}'


@keras.saving.register_keras_serializable(package='captioner')
class LearnedStartVector(keras.layers.Layer):
  """A trainable vector repeated for every example: the baseline's stand-in for the image.

  The input only supplies the batch size; its values are ignored.
  """

  def __init__(self, dim, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim

  def build(self, input_shape):
    self.vector = self.add_weight(name='vector', shape=(self.dim,), initializer='zeros', trainable=True)
    super().build(input_shape)

  def call(self, reference):  # any [batch, ...] -> [batch, dim]
    batch_size = tf.shape(reference)[0]
    return tf.tile(self.vector[tf.newaxis, :], [batch_size, 1])

  def compute_mask(self, inputs, mask=None):
    return None

  def get_config(self):
    config = super().get_config()
    config.update(dim=self.dim)
    return config


@keras.saving.register_keras_serializable(package='captioner')
class PrependStep(keras.layers.Layer):
  """([batch, E], [batch, T, E] masked) -> [batch, T+1, E], the first step always unmasked.

  (keras.layers.Concatenate cannot concatenate masks along the time axis.)
  """

  def call(self, inputs, mask=None):
    first, sequence = inputs
    return tf.concat([tf.expand_dims(first, 1), sequence], axis=1)

  def compute_mask(self, inputs, mask=None):
    sequence_mask = None if mask is None else mask[1]
    if sequence_mask is None:
      return None
    first_mask = tf.ones_like(sequence_mask[:, :1])
    return tf.concat([first_mask, sequence_mask], axis=1)


@keras.saving.register_keras_serializable(package='captioner')
class DropFirstStep(keras.layers.Layer):
  """[batch, T+1, units] -> [batch, T, units]: drops the output of the image step.

  Returns no Keras mask: padding is masked by the loss from the targets, and a
  mask on the logits would make Keras apply it a second time as sample weights.
  """

  def call(self, sequence):
    return sequence[:, 1:]

  def compute_mask(self, inputs, mask=None):
    return None


def build_caption_model(vocab_size, feature_dim, sequence_length, embedding_dim=300, lstm_units=512,
                        num_layers=1, dropout=0.3, use_image=True, dense_dtype=None,
                        fused_lstm=False):
  """Builds the training (teacher-forcing) model.

  Args:
    vocab_size: number of ids, special tokens included (PAD_ID must be 0).
    feature_dim: length of the backbone feature vector (ignored if not use_image).
    sequence_length: length of the Transform's padded id sequences (with START
      and END); the model reads and predicts T = sequence_length - 1 steps.
    embedding_dim: size of the image and word embeddings (300 by default).
    lstm_units: hidden size of every LSTM layer.
    num_layers: 1 to 3 stacked LSTMs.
    dropout: rate applied to the LSTM inputs, between layers and before the softmax.
    use_image: False builds the captions-only baseline (input `input_ids` only).
    dense_dtype: Keras dtype policy of the embeddings and the vocabulary
      projection ('mixed_bfloat16'), or None for the global policy (float32,
      or mixed_float16 on a GPU); the logits are float32 either way. tf_keras'
      LSTM refuses bfloat16: it keeps the global policy, while a FusedLSTM
      runs its matrix products in bfloat16 under 'mixed_bfloat16'.
    fused_lstm: FusedLSTM layers (components/training/fused_lstm.py: the same
      LSTM, faster to train on a CPU) instead of tf_keras' LSTM in a while loop.

  Returns:
    keras Model: {names.IMAGE_FEATURES_KEY: float32 [batch, feature_dim] (if use_image),
    'input_ids': int64 [batch, T]} -> logits float32 [batch, T, vocab_size].
  """
  if not 1 <= num_layers <= MAX_LAYERS:
    raise ValueError(f'num_layers must be between 1 and {MAX_LAYERS}, got {num_layers}.')
  if sequence_length < 2:
    raise ValueError(f'sequence_length must be at least 2 (START and END), got {sequence_length}.')
  assert names.PAD_ID == 0, 'mask_zero masks id 0, so PAD must be id 0'
  steps = sequence_length - 1

  input_ids = keras.Input(shape=(steps,), dtype=tf.int64, name=INPUT_IDS_INPUT)
  if use_image:
    image_features = keras.Input(shape=(feature_dim,), dtype=tf.float32, name=names.IMAGE_FEATURES_KEY)
    inputs = {names.IMAGE_FEATURES_KEY: image_features, INPUT_IDS_INPUT: input_ids}
    first = keras.layers.Dense(embedding_dim, name=_IMAGE_EMBEDDING, dtype=dense_dtype)(image_features)
  else:
    inputs = {INPUT_IDS_INPUT: input_ids}
    first = LearnedStartVector(embedding_dim, name=_START_EMBEDDING, dtype=dense_dtype)(input_ids)
  # Batches parsed from TFRecords carry no static length; the FusedLSTM's steps need one.
  fixed_ids = keras.layers.Reshape([steps], name=_FIXED_LENGTH_IDS)(input_ids)
  words = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name=_WORD_EMBEDDING,
                                 dtype=dense_dtype)(fixed_ids)  # [batch, T, E], masked at PAD
  x = PrependStep(name='lstm_inputs', dtype=dense_dtype)([first, words])  # [batch, T+1, E]
  for index in range(num_layers):
    x = keras.layers.Dropout(dropout, name=f'dropout_{index}')(x)
    if fused_lstm:
      matmul_dtype = keras.mixed_precision.Policy(dense_dtype).compute_dtype if dense_dtype else 'float32'
      x = fused_lstm_lib.FusedLSTM(lstm_units, matmul_dtype, name=_lstm_name(index), dtype='float32')(x)
    else:
      x = keras.layers.LSTM(lstm_units, return_sequences=True, name=_lstm_name(index))(x)
  x = DropFirstStep(name=_DROP_IMAGE_STEP)(x)  # [batch, T, units]
  x = keras.layers.Dropout(dropout, name=_DROPOUT_LOGITS, dtype=dense_dtype)(x)
  x = keras.layers.Dense(vocab_size, name=_LOGITS, dtype=dense_dtype)(x)
  logits = keras.layers.Activation('linear', dtype='float32', name=_LOGITS_FLOAT32)(x)
  name = 'show_and_tell' if use_image else 'captions_only_baseline'
  return keras.Model(inputs, logits, name=name)


def pixel_blind_extractor(image_size: int) -> keras.Model:
  """The language model's stand-in backbone: float32 [b, 0], no pixels read.

  The baseline's decoder only needs the batch size, so its serving graph
  still decodes (and so validates) the images but skips the CNN.
  """
  pixels = keras.Input([image_size, image_size, 3])
  return keras.Model(pixels, keras.layers.Lambda(lambda x: tf.zeros([tf.shape(x)[0], 0]))(pixels))


def build_models(config: config_lib.TrainerConfig, vocab_size: int, sequence_length: int,
                 feature_extractor: keras.Model, grid_shape=None) -> Tuple[keras.Model, keras.Model]:
  """The caption model and the compiled model Keras fits, for `config`.

  `config.decoder` picks the caption model: build_caption_model's Show and
  Tell, or attention.build_attention_model's, which attends over the
  features' grid, `grid_shape` [grid_h, grid_w, channels] (the features
  artifact's EncoderInfo.grid_shape; required for it).

  Without augmentation Keras fits the caption model itself, on cached feature
  vectors, or with `config.fused_training` its target-steps model
  (`target_steps_model`). With `config.augment` it fits a model on
  pixels: augmentation, the frozen `feature_extractor`, then that model.
  Augmentation is here, on training pixels only, so every epoch sees new
  variants (in Transform it would run once). The pixel input takes the
  image-features input's name so that one dataset layout
  (datasets.training_batches) feeds both.

  Returns:
    (caption model: build_caption_model's, what the exporter decodes with;
     training model, compiled with Adam and the summed cross-entropy).
  """
  if config.decoder == config_lib.ATTENTION and config.use_image:
    if grid_shape is None:
      raise ValueError('The attention decoder needs the features\' grid shape (pooling '
                       f'{config_lib.GRID_POOLING!r}); the image features have none.')
    caption_model = attention_lib.build_attention_model(
        vocab_size=vocab_size, grid_shape=grid_shape, sequence_length=sequence_length,
        embedding_dim=config.embedding_dim, lstm_units=config.lstm_units,
        attention_units=config.attention_units, dropout=config.dropout,
        dense_dtype=dense_dtype_policy(config))
  else:
    caption_model = build_caption_model(
        vocab_size=vocab_size, feature_dim=feature_extractor.output_shape[-1],
        sequence_length=sequence_length, embedding_dim=config.embedding_dim,
        lstm_units=config.lstm_units, num_layers=config.num_layers, dropout=config.dropout,
        use_image=config.use_image, dense_dtype=dense_dtype_policy(config),
        fused_lstm=config.fused_training)
  training_model = target_steps_model(caption_model) if config.fused_training else caption_model
  if config.augment and config.use_image:
    image_size = feature_extractor.input_shape[1]
    images = keras.Input([image_size, image_size, 3], name=names.IMAGE_FEATURES_KEY)
    input_ids = keras.Input([sequence_length - 1], dtype=tf.int64, name=INPUT_IDS_INPUT)
    pixels = augmentation.build_augmentation()(images)
    logits = training_model({names.IMAGE_FEATURES_KEY: feature_extractor(pixels, training=False),
                             INPUT_IDS_INPUT: input_ids})
    training_model = keras.Model({names.IMAGE_FEATURES_KEY: images, INPUT_IDS_INPUT: input_ids}, logits)
  if config.fused_training:
    # The legacy Adam updates each variable in one fused kernel (ResourceApplyAdam),
    # the new one in several passes: slower on a CPU (docs/design-notes/fused-lstm.md).
    optimizer, loss = keras.optimizers.legacy.Adam(config.learning_rate), summed_target_loss
  else:
    optimizer, loss = keras.optimizers.Adam(config.learning_rate), summed_caption_loss
  training_model.compile(optimizer=optimizer, loss=loss, jit_compile=config.jit_compile)
  return caption_model, training_model


def target_steps_model(caption_model: keras.Model) -> keras.Model:
  """The caption model, its logits computed only at the steps that have a target.

  About a third of the padded steps have none (PAD targets, masked by the
  loss), and the vocabulary projection and its softmax are most of a training
  step's work: this model shares the caption model's layers and weights and
  returns logits [n, vocab] for the n steps with a target, in row-major order,
  for `summed_target_loss`.
  """
  lstm_outputs = caption_model.get_layer(_DROP_IMAGE_STEP).input  # [batch, T + 1, units]
  input_ids = caption_model.get_layer(_FIXED_LENGTH_IDS).output
  x = TargetSteps(name='target_steps')([lstm_outputs, input_ids])
  for name in (_DROPOUT_LOGITS, _LOGITS, _LOGITS_FLOAT32):
    x = caption_model.get_layer(name)(x)
  return keras.Model(caption_model.input, x, name=f'{caption_model.name}_target_steps')


@keras.saving.register_keras_serializable(package='captioner')
class TargetSteps(keras.layers.Layer):
  """(LSTM outputs [batch, T + 1, units], input ids [batch, T]) -> [n, units]: the outputs
  that predict a target other than PAD.

  The output after the image step predicts nothing (DropFirstStep), and the
  output after input t predicts target t. The Transform writes
  [START, w1..wN, END, PAD...] and keeps END when it truncates, so the target
  ids[1:] of a step is a word or END exactly when its input ids[:-1] is START
  or a word: neither END nor PAD. The model sees only its inputs;
  `summed_target_loss` selects the same steps from the targets, and fails if
  the two counts ever differ. (Selecting from all T + 1 outputs, rather than
  after DropFirstStep, spares the slice's gradient.)
  """

  def call(self, inputs):
    lstm_outputs, input_ids = inputs
    has_target = tf.logical_and(tf.not_equal(input_ids, names.PAD_ID),
                                tf.not_equal(input_ids, names.END_ID))
    image_step = tf.zeros_like(has_target[:, :1])
    return tf.boolean_mask(lstm_outputs, tf.concat([image_step, has_target], axis=1))

  def compute_mask(self, inputs, mask=None):
    return None


def dense_dtype_policy(config: config_lib.TrainerConfig) -> Optional[str]:
  """The Keras dtype policy of the decoder's embeddings and vocabulary projection (and a
  FusedLSTM's products): `config.decoder_precision` resolved on this machine; None (the
  global policy) for float32."""
  if precision_lib.resolve(config.decoder_precision) == precision_lib.BFLOAT16:
    return precision_lib.KERAS_POLICIES[precision_lib.BFLOAT16]
  return None


def summed_target_loss(y_true, target_logits):
  """summed_caption_loss for target_steps_model's logits: the same value, per batch.

  Args:
    y_true: int [batch, T] target ids (ids[:, 1:]).
    target_logits: float [n, vocab_size], at the n targets that are not PAD.

  Returns:
    float32 []: the cross-entropy summed over the captions' steps, over the batch
    size (Keras averages summed_caption_loss's per-caption sums the same way).
  """
  y_true = tf.cast(y_true, tf.int32)
  targets = tf.boolean_mask(y_true, tf.not_equal(y_true, names.PAD_ID))
  tf.debugging.assert_equal(
      tf.shape(targets)[0], tf.shape(target_logits)[0],
      message='The targets that are not PAD are not the steps whose input is neither END nor PAD: '
              'captions must be [START, words..., END, PAD...] (TargetSteps)')
  cross_entropy = softmax_cross_entropy(targets, tf.cast(target_logits, tf.float32))  # [n]
  return tf.reduce_sum(cross_entropy) / tf.cast(tf.shape(y_true)[0], tf.float32)


@tf.custom_gradient
def softmax_cross_entropy(labels, logits):
  """tf.nn.sparse_softmax_cross_entropy_with_logits, from one softmax: labels int32 [n], logits float32 [n, v].

  TensorFlow's op runs its own single pass on a CPU; tf.nn.softmax runs on
  oneDNN, and with it the loss and its gradient took a quarter of the op's time
  at the vocabulary projection's size (770 x 5,000), a tenth of a training step.
  The loss is logsumexp(z) - z[label], written as (max(z) - z[label]) - log(max(p)):
  max(p) = exp(max(z) - logsumexp(z)) is at least 1/v, so its log never
  overflows, however far the label's logit is below the others'.
  """
  probabilities = tf.nn.softmax(logits)
  loss = ((tf.reduce_max(logits, axis=1) - tf.gather(logits, labels, batch_dims=1))
          - tf.math.log(tf.reduce_max(probabilities, axis=1)))

  def grad(upstream):
    label_indices = tf.stack([tf.range(tf.shape(labels)[0]), labels], axis=1)
    d_logits = tf.tensor_scatter_nd_sub(probabilities, label_indices, tf.ones_like(loss))
    return None, upstream[:, tf.newaxis] * d_logits

  return loss, grad


def summed_caption_loss(y_true, logits):
  """Cross-entropy summed over the real time steps of each caption.

  L(I, S) = -sum_t log p_t(S_t), the paper's loss: targets equal to PAD
  (everything after END) contribute nothing. Keras then averages the
  per-example sums over the (global) batch.

  Args:
    y_true: int [batch, T] target ids (ids[:, 1:]).
    logits: float [batch, T, vocab_size].

  Returns:
    float32 [batch].
  """
  y_true = tf.cast(y_true, tf.int32)
  cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=y_true, logits=tf.cast(logits, tf.float32))  # [batch, T]
  mask = tf.cast(tf.not_equal(y_true, names.PAD_ID), tf.float32)
  return tf.reduce_sum(cross_entropy * mask, axis=1)


def step_decoder(caption_model: keras.Model):
  """The step-wise decoder of a trained caption model: attention.AttentionDecoder for an
  attention model, CaptionDecoder otherwise (the same interface)."""
  if attention_lib.is_attention_model(caption_model):
    return attention_lib.AttentionDecoder(caption_model)
  return CaptionDecoder(caption_model)


class CaptionDecoder(tf.Module):
  """Runs a trained caption model one word at a time (for beam search and serving).

  States are a tuple with one (h, c) pair per LSTM layer, each [n, lstm_units]
  in the layers' compute dtype (float16 under mixed precision).
  """

  def __init__(self, model, name='caption_decoder'):
    super().__init__(name=name)
    self.use_image = names.IMAGE_FEATURES_KEY in model.input_names
    layer_names = {layer.name for layer in model.layers}
    self.first_step = model.get_layer(_IMAGE_EMBEDDING if self.use_image else _START_EMBEDDING)
    self.word_embedding = model.get_layer(_WORD_EMBEDDING)
    self.lstms = [model.get_layer(_lstm_name(i)) for i in range(MAX_LAYERS) if _lstm_name(i) in layer_names]
    self.output_layer = model.get_layer(_LOGITS)
    self.vocab_size = self.output_layer.units

  def _run_lstms(self, x, states):
    """x: [n, E]; states: per-layer (h, c) or None for zeros -> (outputs [n, units], new states)."""
    new_states = []
    for index, lstm in enumerate(self.lstms):
      if states is None:
        layer_state = [tf.zeros([tf.shape(x)[0], lstm.units], dtype=lstm.cell.compute_dtype)] * 2
      else:
        layer_state = list(states[index])
      x, (h, c) = lstm.cell(x, layer_state, training=False)
      new_states.append((h, c))
    return x, tuple(new_states)

  def initial_state(self, image_features):
    """Feeds the image step. image_features: float32 [n, feature_dim] -> states.

    For the captions-only baseline only the batch size of `image_features` is used.
    """
    _, states = self._run_lstms(self.first_step(image_features), None)
    return states

  def step(self, word_ids, states):
    """Feeds one word per sequence. word_ids: int [n] -> (log_probs float32 [n, vocab], states)."""
    x = self.word_embedding(word_ids)  # [n, E]
    outputs, states = self._run_lstms(x, states)
    logits = tf.cast(self.output_layer(outputs), tf.float32)
    return tf.nn.log_softmax(logits, axis=-1), states

  def generate(self, image_features, beam_width, max_length, top_k=None):
    """Beam-search captions for a batch of image features (see beam_search.beam_search).

    Returns (ids int32 [n, max_length], lengths int32 [n], log_probs float32 [n]);
    with top_k, the top_k best of each (beam_search.beam_search_top_k):
    (ids [n, top_k, max_length], lengths [n, top_k], log_probs [n, top_k]).
    """
    arguments = dict(initial_states=self.initial_state(image_features), step_fn=self.step,
                     batch_size=tf.shape(image_features)[0], beam_width=beam_width, max_length=max_length,
                     start_id=names.START_ID, end_id=names.END_ID)
    if top_k is None:
      return beam_search_lib.beam_search(**arguments)
    return beam_search_lib.beam_search_top_k(**arguments, top_k=top_k)
