"""A tiny, untrained captioner exported by the project's own exporter, for tests, benchmarks and demos.

It goes through components/training/exporter.py exactly like the Trainer's model, so it
has the real serving graph (decode, VGG16 backbone, LSTM beam search, word
lookup) and honours the SavedModel contract; only the sizes are tiny (32x32
images, 8-unit LSTM, a dozen words) and the weights random. At Keras' default
initialisation a random decoder says the same thing for every image, so its
weights are scaled up: different images then get different captions and
log-probabilities, which lets tests notice a batch handed back in the wrong order.

    python -m testing.tiny_model /tmp/serving/captioner/1
"""
import argparse
from typing import List, NamedTuple, Sequence

import tf_keras as keras

from components.training import exporter
from components import config as config_lib
from components import names
from components.encoder import image_features
from components.training import model as model_lib

IMAGE_SIZE = 32  # the smallest input VGG16 accepts
WORDS = ('a', 'dog', 'cat', 'runs', 'red', 'ball', 'on', 'the', 'grass', 'sits')
_DECODER_WEIGHT_SCALE = 5.0


class TinyCaptioner(NamedTuple):
  """What the exporter takes: the pieces of the tiny captioner."""
  feature_extractor: keras.Model  # float32 [batch, IMAGE_SIZE, IMAGE_SIZE, 3] -> [batch, 512]
  decoder: model_lib.CaptionDecoder
  vocabulary: List[str]  # names.SPECIAL_TOKENS, then the words


def build_tiny_captioner(seed: int = 0, max_length: int = 7, words: Sequence[str] = WORDS,
                         precision: str = 'float32', image_size: int = IMAGE_SIZE,
                         pooling: str = 'avg') -> TinyCaptioner:
  """Builds the tiny random-weight captioner for captions of up to `max_length` words of `words`,
  its backbone computing in `precision` ('float32' or 'bfloat16'); a bigger `image_size` and
  pooling 'fc2' give the paper's encoder cost (benchmarks) behind the same tiny decoder."""
  keras.utils.set_random_seed(seed)
  vocabulary = list(names.SPECIAL_TOKENS) + list(words)
  feature_extractor = image_features.build_feature_extractor(config_lib.EncoderConfig(
      backbone='vgg16', image_size=image_size, backbone_weights=None, pooling=pooling, precision=precision))
  caption_model = model_lib.build_caption_model(
      vocab_size=len(vocabulary), feature_dim=feature_extractor.output_shape[-1],
      sequence_length=max_length + 1, embedding_dim=8, lstm_units=8)
  for variable in caption_model.trainable_variables:
    variable.assign(variable * _DECODER_WEIGHT_SCALE)
  return TinyCaptioner(feature_extractor, model_lib.CaptionDecoder(caption_model), vocabulary)


def export_tiny_model(export_dir: str, seed: int = 0, beam_width: int = 2, max_length: int = 7,
                      words: Sequence[str] = WORDS, image_size: int = IMAGE_SIZE, pooling: str = 'avg',
                      precision: str = 'float32') -> str:
  """Writes a tiny random-weight serving SavedModel to `export_dir`; returns `export_dir`."""
  captioner = build_tiny_captioner(seed, max_length, words, precision=precision, image_size=image_size,
                                   pooling=pooling)
  return exporter.export_serving_model(
      export_dir, captioner.feature_extractor, captioner.decoder, captioner.vocabulary,
      max_length=max_length, beam_width=beam_width)


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m testing.tiny_model', description=__doc__.split('\n\n')[0])
  parser.add_argument('export_dir', help='Where to write it, e.g. <serving_dir>/captioner/1.')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  print(export_tiny_model(args.export_dir, seed=args.seed))


if __name__ == '__main__':
  main()
