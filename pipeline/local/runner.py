"""Runs the captioner pipeline on this machine with TFX's LocalDagRunner.

Everything lands in one output folder:
  <output_dir>/logs/run-*.log   the full log of every run (the terminal shows
                                progress only, unless --verbose)
  <output_dir>/pipeline_root/   component outputs
  <output_dir>/metadata.sqlite  the ML Metadata store (a re-run reuses cached components)
  <output_dir>/serving/<model>/ the TF Serving base directory the Pusher writes versions into
  <output_dir>/summary.json     metrics of captioner and baseline, blessing, and paths
                                of the pushed model, the gallery and the reject report
Without --data_dir it generates the embedded dataset --dataset (shapes, the
default, or the harder scenes) into <output_dir>/data/<dataset> on first use
(again when --num_images or --seed change), and trains with its settings
(components/config.py EMBEDDED_DATASETS).
A run that was killed or interrupted is resumed by running the same command
again: finished components come from the cache and an interrupted Trainer
continues from its last finished epoch.

  python -m pipeline.local.runner --output_dir outputs
  python -m pipeline.local.runner --data_dir /data/Flickr8k --backbone_weights imagenet

Datasets --data_dir reads (the layout is detected; docs/datasets.md says
what to download and where each file goes):
  Flickr8k   Flicker8k_Dataset/ + Flickr8k.token.txt + Flickr_8k.{train,dev,test}Images.txt,
             or Kaggle's Images/ + captions.txt
  Flickr30k  flickr30k_images/ + results.csv [+ dataset_flickr30k.json for Karpathy's splits]
  MS COCO    train2014/ + val2014/ + annotations/captions_{train,val}2014.json
             [+ dataset_coco.json for Karpathy's splits]
  Karpathy   dataset_{flickr8k,flickr30k,coco}.json with the images in images/,
             Flicker8k_Dataset/, flickr30k_images/ or <filepath>/ (train2014/, val2014/)
"""
import argparse
import os
import sys
from typing import List, Optional

from components import config as config_lib
from components import names
from components import progress
from pipeline.local import run_log
from pipeline import settings


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output_dir', default='outputs',
                      help='Folder for the pipeline root, metadata, serving dir and reports.')
  parser.add_argument('--data_dir', default=None,
                      help='A Flickr8k, Flickr30k, MS COCO 2014 or Karpathy-split dataset folder '
                           '(layouts above). Default: the embedded dataset, generated on first use.')
  parser.add_argument('--dataset', choices=list(config_lib.EMBEDDED_DATASETS), default=names.SHAPES_DATASET,
                      help='The embedded dataset used without --data_dir: shapes (the quick check) or '
                           'scenes (harder: counts, relations, overlaps, varied wording); '
                           'default: %(default)s.')
  parser.add_argument('--num_images', type=int, default=None,
                      help="Size of the generated embedded dataset (default: the dataset's, "
                           + ', '.join(f'{name} {dataset.num_images}'
                                       for name, dataset in config_lib.EMBEDDED_DATASETS.items()) + ').')
  parser.add_argument('--beam_workers', type=int, default=0,
                      help='Beam DirectRunner workers (processes; threads for the ExampleGen); '
                           '0 means one per core.')
  parser.add_argument('--verbose', action='store_true',
                      help='Show the whole log (TensorFlow, TFX, Beam) on the terminal, not only '
                           'progress; it is written to <output_dir>/logs/ either way.')
  settings.add_arguments(parser)
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None, restore_streams: bool = True) -> int:
  """Runs the pipeline; 0 on success, 1 if a component failed, 2 on a bad dataset folder, 130 on Ctrl-C.

  Args:
    argv: command-line flags (default: sys.argv[1:]).
    restore_streams: see run_log.capture's `restore`.
  """
  args = _parse_args(argv)
  output_dir = os.path.abspath(args.output_dir)
  with run_log.capture(output_dir, verbose=args.verbose, restore=restore_streams) as log:
    progress.logger.info('Full log: %s', log.path)
    # Imported only now: importing TensorFlow prints C++ start-up lines (and
    # Google's libraries print Python-version warnings) that belong in the log.
    from pipeline.local import run as local_run  # pylint: disable=g-import-not-at-top
    return local_run.run(args, output_dir, log)


if __name__ == '__main__':
  # Streams stay on the log file while the interpreter shuts down (see run_log.capture).
  sys.exit(main(restore_streams=False))
