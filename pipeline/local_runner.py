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

Datasets --data_dir reads (the layout is detected; README.md's "Real
datasets" says what to download and where each file goes):
  Flickr8k   Flicker8k_Dataset/ + Flickr8k.token.txt + Flickr_8k.{train,dev,test}Images.txt,
             or Kaggle's Images/ + captions.txt
  Flickr30k  flickr30k_images/ + results.csv [+ dataset_flickr30k.json for Karpathy's splits]
  MS COCO    train2014/ + val2014/ + annotations/captions_{train,val}2014.json
             [+ dataset_coco.json for Karpathy's splits]
  Karpathy   dataset_{flickr8k,flickr30k,coco}.json with the images in images/,
             Flicker8k_Dataset/, flickr30k_images/ or <filepath>/ (train2014/, val2014/)
"""
import argparse
import logging
import os
import sys
from typing import List, Optional

from tfx import v1 as tfx

from components import features
from components import names
from components.ingestion import flickr8k, layouts, shapes_dataset
from components import config as config_lib
from pipeline import beam_args
from pipeline import pipeline as pipeline_lib
from pipeline import settings
from pipeline import summary as summary_lib



def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output_dir', default='outputs',
                      help='Folder for the pipeline root, metadata, serving dir and reports.')
  parser.add_argument('--data_dir', default=None,
                      help='A Flickr8k, Flickr30k, MS COCO 2014 or Karpathy-split dataset folder '
                           '(layouts above). Default: the embedded dataset, generated on first use.')
  parser.add_argument('--restval_split', default=layouts.DEFAULT_RESTVAL_SPLIT,
                      choices=features.SPLITS,
                      help="Where a Karpathy split file's 'restval' images go (default: %(default)s, "
                           'as im2txt does).')
  parser.add_argument('--num_images', type=int, default=config_lib.EMBEDDED_DATASET.num_images,
                      help='Size of the generated embedded dataset.')
  parser.add_argument('--beam_workers', type=int, default=0,
                      help='Beam DirectRunner worker processes; 0 means one per core.')
  settings.add_arguments(parser)
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
  args = _parse_args(argv)
  # force: an imported library has already given the root logger a WARNING-level handler.
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', force=True)
  output_dir = os.path.abspath(args.output_dir)
  embedded = args.data_dir is None
  data_dir = (os.path.join(output_dir, 'data', 'shapes') if embedded
              else os.path.abspath(args.data_dir))
  if embedded and not os.path.exists(os.path.join(data_dir, flickr8k.TOKEN_FILE)):
    logging.info('Generating the embedded dataset (%d images) into %s', args.num_images, data_dir)
    shapes_dataset.generate(data_dir, num_images=args.num_images,
                            image_size=config_lib.EMBEDDED_DATASET.image_size,
                            seed=config_lib.EMBEDDED_DATASET.seed)

  try:
    layouts.detect_layout(data_dir)  # fail before any component runs
  except layouts.LayoutError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2

  trainer_config = settings.trainer_config(
      args, config_lib.EMBEDDED_TRAINER if embedded else config_lib.TrainerConfig())
  serving_model_dir = os.path.join(output_dir, 'serving', args.model_name)
  metadata_path = os.path.join(output_dir, 'metadata.sqlite')
  pipeline = pipeline_lib.create_pipeline(
      pipeline_name=args.pipeline_name,
      pipeline_root=os.path.join(output_dir, 'pipeline_root'),
      data_root=data_dir,
      schema_path=names.SCHEMA_PATH,
      serving_model_dir=serving_model_dir,
      transform_config=config_lib.TransformConfig(),
      trainer_config=trainer_config,
      baseline_config=settings.baseline_config(trainer_config),
      evaluation_config=settings.evaluation_config(
          args, config_lib.EMBEDDED_EVALUATION if embedded else config_lib.EvaluationConfig()),
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          metadata_path),
      beam_pipeline_args=beam_args.direct_beam_args(args.beam_workers),
      enable_cache=not args.no_cache,
      restval_split=args.restval_split)
  tfx.orchestration.LocalDagRunner().run(pipeline)

  summary = summary_lib.write_summary(
      metadata_path, args.pipeline_name, os.path.join(output_dir, 'summary.json'))
  print(summary_lib.render(summary))
  return 0


if __name__ == '__main__':
  sys.exit(main())
