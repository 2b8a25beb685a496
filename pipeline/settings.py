"""Command-line settings shared by the local and the Kubeflow runner.

Both runners expose the same model, evaluation and pipeline flags and turn
them into the same `components/config.py` dataclasses here, so a hyperparameter
means the same thing wherever the pipeline runs. What differs between the
runners (paths, Beam runner, resources, metadata store) stays in the runners;
both build their Beam options with pipeline/beam_args.py.
"""
import argparse
import dataclasses

from components import config as config_lib
from components import names

# TrainerConfig and EncoderConfig fields that are None-able overrides: the flag
# wins when given, otherwise the runner's defaults (then the dataclass defaults) apply.
_OPTIONAL_TRAINER_FLAGS = ('epochs', 'lstm_units', 'batch_size', 'learning_rate', 'dropout', 'embedding_dim',
                           'scst_epochs', 'decoder_precision')
_OPTIONAL_ENCODER_FLAGS = ('pooling', 'image_size')
# --backbone_weights: the runner's default, or random weights (EncoderConfig's None).
RUNNER_DEFAULT_WEIGHTS, RANDOM_WEIGHTS = 'runner_default', 'none'
# TransformConfig fields set the same way, over the runner's TransformConfig.
_OPTIONAL_TRANSFORM_FLAGS = ('min_word_frequency',)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the pipeline, model and evaluation flags both runners share."""
  parser.add_argument('--pipeline_name', default=names.PIPELINE_NAME)
  parser.add_argument('--restval_split', default=names.DEFAULT_RESTVAL_SPLIT,
                      choices=names.SPLITS,
                      help="Where a Karpathy split file's 'restval' images go (default: %(default)s, "
                           'as im2txt does).')
  parser.add_argument('--model_name', default=names.MODEL_NAME,
                      help='Name TF Serving serves the pushed model under.')
  _add_encoder_arguments(parser)
  _add_training_arguments(parser)
  _add_evaluation_arguments(parser)
  parser.add_argument('--seed', type=int, default=config_lib.TrainerConfig().seed,
                      help='Seeds the data generation, shuffling, weight initialisation and '
                           'dropout; the same seed gives the same metrics on a CPU.')
  parser.add_argument('--no_cache', action='store_true',
                      help='Re-run every component even when its inputs did not change.')


def _add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
  """The frozen backbone's flags."""
  encoder_defaults = config_lib.EncoderConfig()
  parser.add_argument('--backbone', default=encoder_defaults.backbone,
                      choices=list(config_lib.BACKBONE_IMAGE_SIZES))
  parser.add_argument('--backbone_weights', default=RUNNER_DEFAULT_WEIGHTS,
                      help=f"'imagenet', a local .h5 path, or '{RANDOM_WEIGHTS}' (random). "
                           f"Default: the runner's ({RANDOM_WEIGHTS} on the local runner's embedded "
                           f"dataset, {encoder_defaults.backbone_weights} otherwise).")
  parser.add_argument('--pooling', default=None, choices=config_lib.POOLINGS,
                      help="The image feature vector: 'fc2' VGG16's 4,096-d last hidden layer at "
                           "224 px (the paper's); 'avg' the pooled last conv block (InceptionV3's "
                           "2,048-d pool, the paper's for it); 'flatten' keeps where things are. "
                           f"Default: the runner's ({encoder_defaults.pooling} on real data).")
  parser.add_argument('--image_size', type=int, default=None,
                      help="Model input side in pixels (default: the runner's; "
                           "the backbone's own on real data).")
  parser.add_argument('--backbone_precision', default=encoder_defaults.precision,
                      choices=config_lib.PRECISIONS,
                      help="The frozen backbone's arithmetic, in the feature pass and the exported "
                           "serving graph alike: 'bfloat16' (Keras' mixed_bfloat16: several times "
                           "faster on CPUs with AMX-BF16 or AVX512-BF16 and on GPUs of compute "
                           "capability 8.0+), 'float32', or 'auto': bfloat16 where the machine that "
                           'runs the feature pass has such hardware, float32 elsewhere, decided on '
                           'that machine (default: %(default)s).')


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
  """The vocabulary's and the decoder's training flags."""
  trainer_defaults = config_lib.TrainerConfig()
  transform_defaults = config_lib.TransformConfig()
  parser.add_argument('--decoder', default=trainer_defaults.decoder, choices=config_lib.DECODERS,
                      help="'show_and_tell' (the image enters the LSTM once, at t=0) or 'attention' "
                           '(soft attention over the backbone\'s grid at every word, with its own '
                           "defaults: pooling 'grid', the plain Keras training path; see "
                           'components/config.py). Default: %(default)s.')
  parser.add_argument('--epochs', type=int, default=None)
  parser.add_argument('--batch_size', type=int, default=None,
                      help=f"Default: the runner's ({trainer_defaults.batch_size} on real data).")
  parser.add_argument('--learning_rate', type=float, default=None,
                      help=f"Adam's learning rate at the first epoch (default: the runner's; "
                           f'{trainer_defaults.learning_rate} on real data).')
  parser.add_argument('--dropout', type=float, default=None,
                      help=f"Dropout before each LSTM and the softmax (default: the runner's; "
                           f'{trainer_defaults.dropout} on real data).')
  parser.add_argument('--embedding_dim', type=int, default=None,
                      help=f"Size of the word and image embeddings (default: the runner's; "
                           f'{trainer_defaults.embedding_dim} on real data).')
  parser.add_argument('--min_word_frequency', type=int, default=None,
                      help='Words seen fewer times in the train captions become <unk> (default: '
                           f"the runner's; {transform_defaults.min_word_frequency} on real data).")
  parser.add_argument('--lstm_units', type=int, default=None)
  parser.add_argument('--scst_epochs', type=int, default=None,
                      help='Epochs of self-critical sequence training on CIDEr-D after cross-entropy '
                           f"(Rennie et al. 2017; default: the runner's, {trainer_defaults.scst_epochs}; "
                           'docs/benchmarks.md).')
  parser.add_argument('--num_layers', type=int, default=trainer_defaults.num_layers)
  parser.add_argument('--beam_width', type=int, default=trainer_defaults.beam_width)
  parser.add_argument('--augment', action='store_true',
                      help='Train on augmented images (rotation, shifts, shear, zoom, flip); the '
                           'backbone then runs in the Trainer, not from the feature cache.')
  parser.add_argument('--mixed_precision', action='store_true',
                      help='float16 compute on GPUs (ignored without one).')
  parser.add_argument('--decoder_precision', default=None, choices=config_lib.PRECISIONS,
                      help="The decoder's matrix products (embeddings, LSTM, vocabulary projection; "
                           "states and softmax stay float32). 'auto': bfloat16 where the machine that "
                           "trains has bfloat16 units, resolved by the Trainer there. Default: the "
                           f"runner's (float32 on the embedded dataset, {trainer_defaults.decoder_precision} "
                           "otherwise).")


def _add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
  """The blessing's thresholds: one flag per EvaluationConfig field, with the field's help."""
  for field in dataclasses.fields(config_lib.EvaluationConfig):
    parser.add_argument(f'--{field.name}', type=float, default=None,
                        help=f"{field.metadata['help']} Default: the runner's ({field.default} on "
                             'real data).')


def encoder_config(args: argparse.Namespace,
                   defaults: config_lib.EncoderConfig) -> config_lib.EncoderConfig:
  """The frozen backbone's settings: the flags given, over the runner's `defaults`."""
  encoder = _given(args, _OPTIONAL_ENCODER_FLAGS)
  if args.backbone_weights != RUNNER_DEFAULT_WEIGHTS:
    encoder['backbone_weights'] = None if args.backbone_weights == RANDOM_WEIGHTS else args.backbone_weights
  return dataclasses.replace(defaults, backbone=args.backbone, precision=args.backbone_precision,
                             **encoder)


def trainer_config(args: argparse.Namespace,
                   defaults: config_lib.TrainerConfig) -> config_lib.TrainerConfig:
  """The captioner's TrainerConfig: the flags given, over the runner's `defaults`.

  Args:
    args: parsed flags from a parser `add_arguments` was applied to.
    defaults: the runner's TrainerConfig for the decoder --decoder names
      (config_lib.decoder_defaults), used where a flag is unset.

  Raises:
    ValueError: if `defaults` is another decoder's.
  """
  if defaults.decoder != args.decoder:
    raise ValueError(f'The runner passed {defaults.decoder!r} defaults for --decoder {args.decoder}: '
                     'take them from config_lib.decoder_defaults.')
  return dataclasses.replace(
      defaults, augment=args.augment, num_layers=args.num_layers, beam_width=args.beam_width,
      mixed_precision=args.mixed_precision, seed=args.seed, **_given(args, _OPTIONAL_TRAINER_FLAGS))


def _given(args: argparse.Namespace, flags) -> dict:
  """flag name -> value, for those of `flags` given (not None)."""
  return {name: getattr(args, name) for name in flags if getattr(args, name) is not None}


def transform_config(args: argparse.Namespace,
                     defaults: config_lib.TransformConfig) -> config_lib.TransformConfig:
  """The Transform's settings: the flags given, over the runner's `defaults`."""
  return dataclasses.replace(defaults, **_given(args, _OPTIONAL_TRANSFORM_FLAGS))


def baseline_config(trainer: config_lib.TrainerConfig,
                    encoder: config_lib.EncoderConfig) -> config_lib.TrainerConfig:
  """The captions-only baseline: the captioner's settings without the image.

  Cross-entropy only: the self-critical stage trains from the cached image
  features, which the baseline does not read; the Show-and-Tell language model
  whatever the captioner's decoder (attention needs an image to attend to). Its
  serving graph takes images of the encoder's input size, as the captioner's does.
  """
  return dataclasses.replace(trainer, use_image=False, scst_epochs=0, augment=False,
                             decoder=config_lib.SHOW_AND_TELL, image_size=encoder.input_size)


def evaluation_config(args: argparse.Namespace,
                      defaults: config_lib.EvaluationConfig) -> config_lib.EvaluationConfig:
  """The blessing thresholds: the flags given, over the runner's `defaults`."""
  return dataclasses.replace(defaults, **_given(
      args, [field.name for field in dataclasses.fields(config_lib.EvaluationConfig)]))
