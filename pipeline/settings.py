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
from components import features
from components import names

# TrainerConfig fields that are None-able overrides: the flag wins when given,
# otherwise the runner's defaults (then the dataclass defaults) apply.
_OPTIONAL_TRAINER_FLAGS = ('pooling', 'image_size', 'epochs', 'lstm_units', 'batch_size', 'learning_rate',
                           'dropout', 'embedding_dim', 'scst_epochs')
# TransformConfig fields set the same way, over the runner's TransformConfig.
_OPTIONAL_TRANSFORM_FLAGS = ('min_word_frequency',)
# EvaluationConfig fields set by flags of the same name, over the runner's defaults.
_EVALUATION_FLAGS = ('min_bleu4', 'min_cider', 'min_baseline_ratio', 'min_distinct_caption_share')


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds the pipeline, model and evaluation flags both runners share."""
  trainer_defaults = config_lib.TrainerConfig()
  transform_defaults = config_lib.TransformConfig()
  evaluation_defaults = config_lib.EvaluationConfig()
  parser.add_argument('--pipeline_name', default=names.PIPELINE_NAME)
  parser.add_argument('--restval_split', default=features.DEFAULT_RESTVAL_SPLIT,
                      choices=features.SPLITS,
                      help="Where a Karpathy split file's 'restval' images go (default: %(default)s, "
                           'as im2txt does).')
  parser.add_argument('--model_name', default=names.MODEL_NAME,
                      help='Name TF Serving serves the pushed model under.')
  parser.add_argument('--backbone', default=trainer_defaults.backbone,
                      choices=['vgg16', 'inception_v3'])
  parser.add_argument('--backbone_weights', default='auto',
                      help="'imagenet', a local .h5 path, or 'none' (random). "
                           "'auto': the runner's default (none on the local runner's "
                           'embedded dataset, imagenet otherwise).')
  parser.add_argument('--pooling', default=None, choices=config_lib.POOLINGS,
                      help="The image feature vector: 'fc2' VGG16's 4,096-d last hidden layer at "
                           "224 px (the paper's); 'avg' the pooled last conv block (InceptionV3's "
                           "2,048-d pool, the paper's for it); 'flatten' keeps where things are. "
                           f"Default: the runner's ({trainer_defaults.pooling} on real data).")
  parser.add_argument('--image_size', type=int, default=None,
                      help="Model input side in pixels (default: the runner's; "
                           "the backbone's own on real data).")
  parser.add_argument('--precision', default=trainer_defaults.precision, choices=config_lib.PRECISIONS,
                      help="The frozen backbone's arithmetic, in the feature pass and the exported "
                           "serving graph alike: 'bfloat16' (Keras' mixed_bfloat16: several times "
                           "faster on CPUs with AMX-BF16 or AVX512-BF16 and on GPUs of compute "
                           "capability 8.0+, features within 1%% of float32's), 'float32', or 'auto' "
                           'for bfloat16 where the machine building the pipeline has such hardware, '
                           'float32 elsewhere (default: %(default)s).')
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
                           f"(Rennie et al. 2017; default: the runner's, {trainer_defaults.scst_epochs}: "
                           'bench/quality.py measured it on the embedded dataset, see the README).')
  parser.add_argument('--num_layers', type=int, default=trainer_defaults.num_layers)
  parser.add_argument('--beam_width', type=int, default=trainer_defaults.beam_width)
  parser.add_argument('--augment', action='store_true',
                      help="Train with the brief's image augmentation (no feature cache).")
  parser.add_argument('--mixed_precision', action='store_true',
                      help='float16 compute on GPUs (ignored without one).')
  parser.add_argument('--min_bleu4', type=float, default=None,
                      help='Blessing threshold on eval BLEU-4 (default: the runner\'s; '
                           f'{evaluation_defaults.min_bleu4} on real data).')
  parser.add_argument('--min_cider', type=float, default=None,
                      help='Blessing threshold on eval CIDEr-D (default: the runner\'s; '
                           f'{evaluation_defaults.min_cider} on real data).')
  parser.add_argument('--min_baseline_ratio', type=float, default=None,
                      help="Blessing threshold on the captioner's eval BLEU-4 over the captions-only "
                           "baseline's (default: the runner's; "
                           f'{evaluation_defaults.min_baseline_ratio} on real data).')
  parser.add_argument('--min_distinct_caption_share', type=float, default=None,
                      help="Blessing threshold on the share of distinct captions among the "
                           "captioner's eval captions, 0..1: one sentence for every image fails "
                           "(default: the runner's; "
                           f'{evaluation_defaults.min_distinct_caption_share} on real data).')
  parser.add_argument('--seed', type=int, default=trainer_defaults.seed,
                      help='Seeds the data generation, shuffling, weight initialisation and '
                           'dropout; the same seed gives the same metrics on a CPU.')
  parser.add_argument('--no_cache', action='store_true',
                      help='Re-run every component even when its inputs did not change.')


def trainer_config(args: argparse.Namespace,
                   defaults: config_lib.TrainerConfig) -> config_lib.TrainerConfig:
  """The captioner's TrainerConfig: the flags given, over the runner's `defaults`.

  Args:
    args: parsed flags from a parser `add_arguments` was applied to.
    defaults: the runner's TrainerConfig (e.g. config_lib.EMBEDDED_TRAINER),
      used where a flag is left at 'auto' / unset.
  """
  values = {}
  if args.backbone_weights != 'auto':
    values['backbone_weights'] = None if args.backbone_weights == 'none' else args.backbone_weights
  for name in _OPTIONAL_TRAINER_FLAGS:
    if getattr(args, name) is not None:
      values[name] = getattr(args, name)
  return dataclasses.replace(
      defaults, backbone=args.backbone, num_layers=args.num_layers, beam_width=args.beam_width,
      augment=args.augment, mixed_precision=args.mixed_precision, precision=args.precision,
      seed=args.seed, **values)


def transform_config(args: argparse.Namespace,
                     defaults: config_lib.TransformConfig) -> config_lib.TransformConfig:
  """The Transform's settings: the flags given, over the runner's `defaults`."""
  values = {name: getattr(args, name) for name in _OPTIONAL_TRANSFORM_FLAGS
            if getattr(args, name) is not None}
  return dataclasses.replace(defaults, **values)


def baseline_config(trainer: config_lib.TrainerConfig) -> config_lib.TrainerConfig:
  """The captions-only baseline: the captioner's settings without the image.

  Cross-entropy only: the self-critical stage trains from the cached image
  features, which the baseline does not read.
  """
  return dataclasses.replace(trainer, use_image=False, scst_epochs=0)


def evaluation_config(args: argparse.Namespace,
                      defaults: config_lib.EvaluationConfig) -> config_lib.EvaluationConfig:
  """The blessing thresholds: the flags given, over the runner's `defaults`."""
  values = {name: getattr(args, name) for name in _EVALUATION_FLAGS if getattr(args, name) is not None}
  return dataclasses.replace(defaults, **values)
