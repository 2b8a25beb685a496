"""What a caption signature takes and returns, in plain Python and numpy: no TensorFlow.

The in-process captioner (components/evaluation/captioning.py) and the TF
Serving client (serving/client.py) both build a signature's inputs and read
its outputs here, so they agree on the serving contract (components/names.py)
by construction; the client imports this module alone, so it starts in about a
second and, over REST, never imports TensorFlow.
"""
from typing import List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np

from components import names

# Which input each caption signature takes (the SavedModel contract).
INPUT_OF_SIGNATURE = {
    names.CAPTION_SIGNATURE: names.IMAGES_INPUT,
    names.EXAMPLES_SIGNATURE: names.EXAMPLES_INPUT,
}
DEFAULT_BATCH_SIZE = 32

# Protocol buffer wire format: a length-delimited field's tag is (number << 3) | 2.
_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def image_example_bytes(image: bytes) -> bytes:
  """A serialized tf.Example holding only `image` under names.IMAGE_KEY, what from_examples reads.

  Written in the wire format of tensorflow/core/example/example.proto
  (Example.features = 1, Features.feature = 1 (map entry: key 1, value 2),
  Feature.bytes_list = 1, BytesList.value = 1): the same bytes
  tf.train.Example serializes (tests/test_caption_signatures.py compares
  them), without importing TensorFlow for one message.
  """
  feature = _field(1, _field(1, image))
  entry = _field(1, names.IMAGE_KEY.encode('utf-8')) + _field(2, feature)
  return _field(1, _field(1, entry))


def signature_inputs(signature_name: str, images: Sequence[bytes]) -> Tuple[str, List[bytes]]:
  """(input name, values) that ask `signature_name` to caption `images`.

  The from_examples signature takes the images wrapped in tf.Examples;
  serving_default takes the bytes as they are.
  """
  if signature_name not in INPUT_OF_SIGNATURE:
    raise ValueError(f'Unknown caption signature {signature_name!r}; '
                     f'choose one of {sorted(INPUT_OF_SIGNATURE)}.')
  if signature_name == names.EXAMPLES_SIGNATURE:
    return names.EXAMPLES_INPUT, [image_example_bytes(image) for image in images]
  return names.IMAGES_INPUT, list(images)


class _BestCaptions(NamedTuple):
  captions: List[str]
  log_probabilities: List[float]


class Captions(_BestCaptions):
  """A caption signature's answer for a batch, in request order.

  Unpacks as (captions, log_probabilities), the best caption of each image.
  top_captions / top_log_probabilities: per image, the k best captions of the
  beam search, best first (so [0] is the caption), without the missing ones
  (fewer than k finished); empty lists for a model exported without them.
  attention: float32 [num_images, max_length, grid_h, grid_w], where an attention
  model looked for each word of the caption (names.ATTENTION_OUTPUT); None for
  a model without that output (show_and_tell).
  """

  def __new__(cls, captions, log_probabilities, top_captions=None, top_log_probabilities=None,
              attention=None):
    self = super().__new__(cls, captions, log_probabilities)
    self.attention = attention
    self.top_captions = top_captions if top_captions is not None else [[] for _ in captions]
    self.top_log_probabilities = (top_log_probabilities if top_log_probabilities is not None
                                  else [[] for _ in captions])
    return self


def _decode_strings(values):
  return [v.decode('utf-8', errors='replace') for v in values]


def _decode_attention(outputs: Mapping[str, np.ndarray], num_images: int, source: str):
  """names.ATTENTION_OUTPUT as float32 [num_images, max_length, grid_h, grid_w], or None without it."""
  if names.ATTENTION_OUTPUT not in outputs:
    return None
  attention = np.asarray(outputs[names.ATTENTION_OUTPUT], np.float32)
  if attention.ndim != 4 or len(attention) != num_images:
    raise ValueError(f'{source} returned {names.ATTENTION_OUTPUT!r} of shape {attention.shape} for '
                     f'{num_images} images; expected [{num_images}, max_length, grid_h, grid_w].')
  return attention


def decode_outputs(outputs: Mapping[str, np.ndarray], num_images: int, source: str) -> Captions:
  """Checks and decodes a caption signature's outputs (in-process or from TF Serving).

  Raises ValueError naming `source` if an output is missing or the batch size is wrong.
  """
  for key in (names.CAPTION_OUTPUT, names.LOG_PROBABILITY_OUTPUT):
    if key not in outputs:
      raise ValueError(f'{source} returned no output {key!r} (it has {sorted(outputs)}).')
  captions = _decode_strings(np.asarray(outputs[names.CAPTION_OUTPUT]).tolist())
  log_probabilities = [float(p) for p in np.asarray(outputs[names.LOG_PROBABILITY_OUTPUT])]
  if len(captions) != num_images or len(log_probabilities) != num_images:
    raise ValueError(f'{source} returned {len(captions)} captions and {len(log_probabilities)} '
                     f'log-probabilities for {num_images} images.')
  attention = _decode_attention(outputs, num_images, source)
  if names.CAPTIONS_OUTPUT not in outputs or names.LOG_PROBABILITIES_OUTPUT not in outputs:
    return Captions(captions, log_probabilities, attention=attention)
  top_captions = np.asarray(outputs[names.CAPTIONS_OUTPUT])
  top_log_probabilities = np.asarray(outputs[names.LOG_PROBABILITIES_OUTPUT], np.float64)
  if (top_captions.ndim != 2 or top_captions.shape != top_log_probabilities.shape
          or len(top_captions) != num_images):
    raise ValueError(f'{source} returned {names.CAPTIONS_OUTPUT!r} of shape {top_captions.shape} and '
                     f'{names.LOG_PROBABILITIES_OUTPUT!r} of shape {top_log_probabilities.shape} for '
                     f'{num_images} images; expected [{num_images}, k] each.')
  found = np.isfinite(top_log_probabilities)  # -inf marks a caption that never finished
  return Captions(
      captions, log_probabilities,
      [_decode_strings(row[keep].tolist()) for row, keep in zip(top_captions, found)],
      [row[keep].tolist() for row, keep in zip(top_log_probabilities, found)],
      attention)
