"""Runs the captioner pipeline on this machine with TFX's LocalDagRunner.

Everything lands in one output folder:
  <output_dir>/pipeline_root/   component outputs
  <output_dir>/metadata.sqlite  the ML Metadata store (a re-run reuses cached components)
  <output_dir>/serving/<model>/ the TF Serving base directory the Pusher writes versions into
  <output_dir>/summary.json     metrics of captioner and baseline, blessing, and paths
                                of the pushed model, the gallery and the reject report
Without --data_dir it generates the embedded default dataset into
<output_dir>/data/shapes on first use.

  python -m pipeline.local_runner --output_dir outputs
  python -m pipeline.local_runner --data_dir /data/Flickr8k --backbone_weights imagenet
"""
import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from tfx import v1 as tfx

from components import shapes_dataset
from pipeline import config as config_lib
from pipeline import pipeline as pipeline_lib
from pipeline import summary as summary_lib

# Where the curated raw-data schema lives in a source checkout.
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'schemas', 'schema.pbtxt')
# The embedded default: small, synthetic, learnable on 2 CPU cores in minutes.
EMBEDDED_NUM_IMAGES = 2000
EMBEDDED_IMAGE_SIZE = 96
EMBEDDED_SEED = 0
# Training settings that suit the embedded dataset on a CPU; real Flickr8k
# runs use the TrainerConfig defaults (ImageNet VGG16 at 224 px).
EMBEDDED_TRAINER_OVERRIDES = dict(backbone_weights=None, image_size=EMBEDDED_IMAGE_SIZE,
                                  lstm_units=256, epochs=25)


def beam_pipeline_args(num_workers: int) -> List[str]:
  """DirectRunner in multi-processing mode; 0 workers means one per core."""
  return ['--direct_running_mode=multi_processing',
          f'--direct_num_workers={num_workers}']


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  trainer_defaults = config_lib.TrainerConfig()
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output_dir', default='outputs',
                      help='Folder for the pipeline root, metadata, serving dir and reports.')
  parser.add_argument('--data_dir', default=None,
                      help='A Flickr8k folder (official or Kaggle layout). '
                           'Default: the embedded dataset, generated on first use.')
  parser.add_argument('--num_images', type=int, default=EMBEDDED_NUM_IMAGES,
                      help='Size of the generated embedded dataset.')
  parser.add_argument('--pipeline_name', default=config_lib.PIPELINE_NAME)
  parser.add_argument('--model_name', default=config_lib.MODEL_NAME,
                      help='Name TF Serving serves the pushed model under.')
  parser.add_argument('--backbone', default=trainer_defaults.backbone,
                      choices=['vgg16', 'inception_v3'])
  parser.add_argument('--backbone_weights', default='auto',
                      help="'imagenet', a local .h5 path, or 'none' (random). "
                           "'auto': none on the embedded dataset, imagenet otherwise.")
  parser.add_argument('--image_size', type=int, default=None,
                      help='Model input side in pixels (default: 96 on the embedded '
                           'dataset, the backbone\'s own otherwise).')
  parser.add_argument('--epochs', type=int, default=None)
  parser.add_argument('--batch_size', type=int, default=trainer_defaults.batch_size)
  parser.add_argument('--lstm_units', type=int, default=None)
  parser.add_argument('--num_layers', type=int, default=trainer_defaults.num_layers)
  parser.add_argument('--beam_width', type=int, default=trainer_defaults.beam_width)
  parser.add_argument('--augment', action='store_true',
                      help='Train with the brief\'s image augmentation (no feature cache).')
  parser.add_argument('--min_bleu4', type=float, default=config_lib.EvaluationConfig.min_bleu4)
  parser.add_argument('--min_cider', type=float, default=config_lib.EvaluationConfig.min_cider)
  parser.add_argument('--beam_workers', type=int, default=0,
                      help='Beam DirectRunner worker processes; 0 means one per core.')
  parser.add_argument('--no_cache', action='store_true',
                      help='Re-run every component even when its inputs did not change.')
  return parser.parse_args(argv)


def _trainer_config(args: argparse.Namespace, embedded: bool) -> config_lib.TrainerConfig:
  values = dict(EMBEDDED_TRAINER_OVERRIDES) if embedded else {}
  if args.backbone_weights != 'auto':
    values['backbone_weights'] = None if args.backbone_weights == 'none' else args.backbone_weights
  for name in ('image_size', 'epochs', 'lstm_units'):
    if getattr(args, name) is not None:
      values[name] = getattr(args, name)
  return config_lib.TrainerConfig(
      backbone=args.backbone, batch_size=args.batch_size, num_layers=args.num_layers,
      beam_width=args.beam_width, augment=args.augment, **values)


def main(argv: Optional[List[str]] = None) -> int:
  args = _parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  output_dir = os.path.abspath(args.output_dir)
  embedded = args.data_dir is None
  data_dir = (os.path.join(output_dir, 'data', 'shapes') if embedded
              else os.path.abspath(args.data_dir))
  if embedded and not os.path.exists(os.path.join(data_dir, 'Flickr8k.token.txt')):
    logging.info('Generating the embedded dataset (%d images) into %s', args.num_images, data_dir)
    shapes_dataset.generate(data_dir, num_images=args.num_images,
                            image_size=EMBEDDED_IMAGE_SIZE, seed=EMBEDDED_SEED)

  trainer_config = _trainer_config(args, embedded)
  serving_model_dir = os.path.join(output_dir, 'serving', args.model_name)
  metadata_path = os.path.join(output_dir, 'metadata.sqlite')
  pipeline = pipeline_lib.create_pipeline(
      pipeline_name=args.pipeline_name,
      pipeline_root=os.path.join(output_dir, 'pipeline_root'),
      data_root=data_dir,
      schema_path=SCHEMA_PATH,
      serving_model_dir=serving_model_dir,
      transform_config=config_lib.TransformConfig(),
      trainer_config=trainer_config,
      baseline_config=config_lib.TrainerConfig(
          **{**config_lib.to_custom_config(trainer_config), 'use_image': False}),
      evaluation_config=config_lib.EvaluationConfig(min_bleu4=args.min_bleu4,
                                                    min_cider=args.min_cider),
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          metadata_path),
      beam_pipeline_args=beam_pipeline_args(args.beam_workers),
      enable_cache=not args.no_cache)
  tfx.orchestration.LocalDagRunner().run(pipeline)

  summary = summary_lib.write_summary(
      metadata_path, args.pipeline_name, os.path.join(output_dir, 'summary.json'))
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
