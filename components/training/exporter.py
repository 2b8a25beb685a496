"""Exports the serving SavedModel: encoded image bytes in, caption string out.

Everything happens inside the graph (decode and resize, backbone, beam search,
id -> word lookup, special-token stripping, joining), so TF Serving alone can
answer a request. Three signatures, per the contract in components/names.py:

  names.CAPTION_SIGNATURE  (serving_default):
      names.IMAGES_INPUT   string [None]  encoded JPEG/PNG/GIF/BMP bytes
  names.EXAMPLES_SIGNATURE (from_examples):
      names.EXAMPLES_INPUT string [None]  serialized tf.Example with bytes
                                             feature names.IMAGE_KEY
  names.FEATURES_SIGNATURE (from_features):
      names.IMAGE_FEATURES_KEY float32 [None, feature_dim]  the backbone's output,
          as the ImageFeatureGen cached it: the evaluator and the gallery
          caption from the cache once the model's encoder weights match the
          artifact's by fingerprint (components/evaluation/captioning.py)
  all -> names.CAPTION_OUTPUT           string [None]     words joined by single spaces
         names.LOG_PROBABILITY_OUTPUT   float32 [None]    log p(caption, END | image)
         names.CAPTIONS_OUTPUT          string [None, k]  the k = beam_width best, best first
         names.LOG_PROBABILITIES_OUTPUT float32 [None, k] theirs ('' and -inf where fewer finished)
  and, for an attention decoder (attention.AttentionDecoder) only:
         names.ATTENTION_OUTPUT float32 [None, max_length, grid_h, grid_w]  the
             caption's weights per word (row t: word t's step; 0 from its length on)

The module also keeps `encode_images` (a function, not a signature): images
string [None] -> float32 [None, feature_dim], the serving graph's own features,
which tests compare with the cached ones.

The SavedModel carries TF Serving's warm-up file (names.WARMUP_REQUESTS_PATH):
a few real Predict requests of both image signatures that TF Serving (and the
local server) replays at load, so the first client does not pay for the
graph's first run.

Bytes that are not an image make the call fail with InvalidArgument ("Unknown
image file format. One of JPEG, PNG, GIF, BMP required."), which TF Serving
returns to the client as INVALID_ARGUMENT.
"""
import os

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from components import names
from components import records
from components.encoder import image_features

# Images per warm-up request, one request each: a lone image and a small batch
# (TF Serving warms each batch shape separately).
_WARMUP_BATCH_SIZES = (1, 4)


def _caption_fns(feature_extractor, decoder, vocabulary, max_length, beam_width):
  """Returns tf.functions (encode: images string [batch] -> float32 [batch, feature_dim];
  caption_images: images -> outputs; caption_features: float32 [batch, feature_dim] -> outputs),
  outputs being the caption outputs above (k = beam_width)."""
  vocabulary = tf.constant(vocabulary, dtype=tf.string)  # string [vocab_size], by id
  feature_dim = feature_extractor.output_shape[-1]
  grid_shape = getattr(decoder, 'grid_shape', None)  # an attention decoder's [grid_h, grid_w, channels]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def encode(images):  # string [batch] -> float32 [batch, feature_dim]
    return image_features.encode_images(feature_extractor, images)

  attention_shape = [max_length] + list(grid_shape[:2]) if grid_shape else [0]  # per image

  def caption_batch(image_vectors):
    generated = decoder.generate(image_vectors, beam_width, max_length, top_k=beam_width)
    ids, lengths, log_probs = generated[:3]
    ids = tf.reshape(ids, [-1, max_length])  # [batch*k, max_length], hypotheses of an image together
    words = tf.gather(vocabulary, ids)  # string [batch*k, max_length]
    is_word = tf.logical_and(ids >= names.NUM_SPECIAL_TOKENS,
                             tf.sequence_mask(tf.reshape(lengths, [-1]), max_length))
    captions = tf.strings.reduce_join(tf.ragged.boolean_mask(words, is_word), axis=1, separator=' ')
    captions = tf.reshape(captions, [-1, beam_width])  # string [batch, k]
    if not grid_shape:
      return captions, log_probs, tf.zeros([tf.shape(captions)[0]] + attention_shape)
    # The best caption's weights, one row per word it shows (special tokens dropped as from
    # the caption), then zeros.
    best_is_word = tf.reshape(is_word, [-1, beam_width, max_length])[:, 0]  # [batch, max_length]
    shown = tf.ragged.boolean_mask(generated[3][:, 0], best_is_word)  # [batch, (words), L]
    attention = shown.to_tensor(shape=[None, max_length, grid_shape[0] * grid_shape[1]])
    return captions, log_probs, tf.reshape(attention, [-1] + attention_shape)

  def empty_batch():
    return (tf.zeros([0, beam_width], tf.string), tf.zeros([0, beam_width], tf.float32),
            tf.zeros([0] + attention_shape))

  def outputs(captions, log_probs, attention):  # string [batch, k], float32 [batch, k] -> the outputs above
    result = {names.CAPTION_OUTPUT: captions[:, 0], names.LOG_PROBABILITY_OUTPUT: log_probs[:, 0],
              names.CAPTIONS_OUTPUT: captions, names.LOG_PROBABILITIES_OUTPUT: log_probs}
    if grid_shape:
      result[names.ATTENTION_OUTPUT] = tf.ensure_shape(attention, [None] + attention_shape)
    return result

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def caption_images(images):
    # An empty request gets an empty answer (the CPU convolution kernels fail on an empty batch).
    return outputs(*tf.cond(tf.size(images) > 0, lambda: caption_batch(encode(images)), empty_batch))

  @tf.function(input_signature=[tf.TensorSpec([None, feature_dim], tf.float32)])
  def caption_features(image_vectors):
    return outputs(*tf.cond(tf.shape(image_vectors)[0] > 0, lambda: caption_batch(image_vectors),
                            empty_batch))

  return encode, caption_images, caption_features


def export_serving_model(export_dir, feature_extractor, decoder, vocabulary, max_length, beam_width):
  """Writes the serving SavedModel to `export_dir` and returns `export_dir`.

  Args:
    export_dir: destination directory (e.g. the Trainer's serving_model_dir).
    feature_extractor: image_features.build_feature_extractor(...) model; its
      input side is the size images are resized to.
    decoder: model.step_decoder(...) over the trained caption model (an
      attention decoder adds names.ATTENTION_OUTPUT to every signature).
    vocabulary: list of str, the words in id order; ids 0..3 must be
      names.SPECIAL_TOKENS, and its length the decoder's vocabulary size.
    max_length: maximum number of generated ids, END included (the
      Transform's sequence_length - 1 allows every caption seen in training).
    beam_width: fixed at export; 1 is greedy decoding.
  """
  vocabulary = list(vocabulary)
  if tuple(vocabulary[:names.NUM_SPECIAL_TOKENS]) != names.SPECIAL_TOKENS:
    raise ValueError(f'vocabulary must start with {names.SPECIAL_TOKENS}, '
                     f'got {vocabulary[:names.NUM_SPECIAL_TOKENS]}.')
  if len(vocabulary) != decoder.vocab_size:
    raise ValueError(f'vocabulary has {len(vocabulary)} words but the decoder predicts '
                     f'{decoder.vocab_size} ids.')
  encode, caption_images, caption_features = _caption_fns(
      feature_extractor, decoder, vocabulary, max_length, beam_width)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=names.IMAGES_INPUT)])
  def caption(images):
    return caption_images(images)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=names.EXAMPLES_INPUT)])
  def caption_examples(examples):
    parsed = tf.io.parse_example(examples, {names.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
    return caption_images(parsed[names.IMAGE_KEY])

  @tf.function(input_signature=[tf.TensorSpec([None, feature_extractor.output_shape[-1]], tf.float32,
                                              name=names.IMAGE_FEATURES_KEY)])
  def caption_from_features(image_features):  # the signature's input takes the argument's name
    return caption_features(image_features)

  # The module tracks the variables, not the Keras objects: saving Keras
  # objects re-traces every layer for Keras metadata nobody reads here, which
  # doubles the export time.
  module = tf.Module(name='captioner')
  module.encoder_variables = list(feature_extractor.variables)
  module.decoder_variables = list(decoder.variables)
  module.caption = caption
  module.caption_examples = caption_examples
  module.caption_from_features = caption_from_features
  module.encode_images = encode
  signatures = {
      names.CAPTION_SIGNATURE: caption.get_concrete_function(),
      names.EXAMPLES_SIGNATURE: caption_examples.get_concrete_function(),
      names.FEATURES_SIGNATURE: caption_from_features.get_concrete_function(),
  }
  tf.saved_model.save(module, export_dir, signatures=signatures)
  _write_warmup_requests(export_dir, feature_extractor.input_shape[1])
  return export_dir


def _warmup_images(count, image_size):
  """`count` encoded image_size-square noise images, alternately JPEG and PNG (both decoders run)."""
  images = []
  for index in range(count):
    pixels = np.random.default_rng(index).integers(0, 256, [image_size, image_size, 3], dtype=np.uint8)
    encode = tf.io.encode_jpeg if index % 2 == 0 else tf.io.encode_png
    images.append(encode(pixels).numpy())
  return images


def _write_warmup_requests(export_dir, image_size):
  """Writes <export_dir>/assets.extra/tf_serving_warmup_requests: PredictionLog records, TFRecord format.

  One PredictRequest per batch size in _WARMUP_BATCH_SIZES for each caption
  signature, on real encoded images, as TF Serving's SavedModel warm-up
  expects (https://www.tensorflow.org/tfx/serving/saved_model_warmup).
  """
  path = os.path.join(export_dir, names.WARMUP_REQUESTS_PATH)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for batch_size in _WARMUP_BATCH_SIZES:
      images = _warmup_images(batch_size, image_size)
      for signature, alias, values in (
          (names.CAPTION_SIGNATURE, names.IMAGES_INPUT, images),
          (names.EXAMPLES_SIGNATURE, names.EXAMPLES_INPUT,
           [records.image_example(image).SerializeToString() for image in images])):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = names.MODEL_NAME
        request.model_spec.signature_name = signature
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)]))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())
