"""Caption quality over seeds: per decoder, and with and without self-critical training.

One seed says little (bench/seeds.py measured how much seeds differ), so for
each seed this bench runs the CaptionTrainer's run_fn (components/training/
trainer.py) once with `scst_epochs` self-critical epochs after cross-entropy:
run_fn exports the model as cross-entropy left it (model_run/
names.CROSS_ENTROPY_MODEL_DIR) and the fine-tuned one, so both come from the
same cross-entropy weights and the difference is the stage's alone. Both are
scored on the eval and demo splits as the CaptionEvaluator scores them
(captioning.caption_and_score from the cached features: the COCO toolkit's
BLEU-4 and CIDEr-D).

`--decoders show_and_tell,attention` trains each decoder with the settings
and pooling its embedded job uses (config_lib.decoder_defaults: 'flatten' for
Show and Tell, 'grid' for attention), every seed of each from the same
features, so the decoders compare against the seed-to-seed spread.
`--scst_epochs 0` skips the self-critical stage (cross-entropy only).

Data: an embedded dataset (`--dataset`, components/config.py EMBEDDED_DATASETS), generated and
run through the ExampleGen and Transform executors once and the
ImageFeatureGen executor once per pooling (testing/transformed_data.py), or a
finished main job's artifacts with `--pipeline_root` (its features where their
pooling is the decoder's, features computed here from its examples otherwise).

Prints one JSON line: `dataset`, `seeds`, and per decoder (`decoders`): per seed the
eval/demo BLEU-4 and CIDEr-D of the cross-entropy model, its epochs and median
seconds per epoch; their mean and seed range (max - min). With self-critical
epochs, per decoder also (`scst_stage`): the fine-tuned model's scores; the per-seed
differences (SCST minus cross-entropy), their mean, min and max; the train-split
CIDEr-D of the sampled and the greedy captions per self-critical epoch (what
the stage optimises: it must rise); the median seconds of a cross-entropy and
of a self-critical epoch; and `helps`, per split, whether the mean CIDEr-D gain
exceeds the seed-to-seed range (the rule for turning the stage on by default;
null with one seed).

Usage: python -m bench.quality [--dataset scenes] [--seeds 0,1,2] [--scst_epochs 5] [--epochs 25]
       [--decoders show_and_tell,attention] [--pipeline_root outputs/pipeline_root]
"""
import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import sys
import tempfile
from typing import Dict, List

import numpy as np

from bench import seeds as seeds_bench
from components import config as config_lib
from components import names
from components.encoder import features_artifact
from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.training import trainer
from testing import transformed_data

SPLITS = (names.EVAL_SPLIT, names.DEMO_SPLIT)
METRICS = {'bleu4': caption_metrics.BLEU_4, 'cider': caption_metrics.CIDER_D}
MODELS = ('cross_entropy', 'scst')


def _scores(model_dir: str, examples, features_uri: str) -> Dict[str, float]:
  """{'<split>_<metric>': corpus score} of the model on the eval and demo splits."""
  result = {}
  for split in SPLITS:
    corpus = captioning.caption_and_score(model_dir, examples, split,
                                          image_features_uri=features_uri).scores['corpus']
    result.update({f'{split}_{key}': round(corpus[name], 4) for key, name in METRICS.items()})
  return result


def train(data, examples, features_uri: str, config: config_lib.TrainerConfig, work_dir: str) -> Dict:
  """run_fn once: the cross-entropy model's scores, epochs and seconds per epoch, and with
  self-critical epochs the fine-tuned model's scores and the stage's rewards and epoch seconds."""
  args = transformed_data.fn_args(data, work_dir, config, features_uri)
  with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines; stdout holds the JSON only
    trainer.run_fn(args)
  with open(os.path.join(args.model_run_dir, names.TRAINING_REPORT_FILE)) as f:
    report = json.load(f)
  epoch_seconds = report['epoch_seconds']
  run = {
      'epochs': len(report['history']['loss']),
      # The first epoch also traces the graphs.
      'seconds_per_epoch': round(float(np.median(epoch_seconds[1:] or epoch_seconds)), 2),
      'cross_entropy_epoch_seconds': epoch_seconds,
  }
  if not config.scst_epochs:
    return {'cross_entropy': _scores(args.serving_model_dir, examples, features_uri), **run}
  return {
      'cross_entropy': _scores(os.path.join(args.model_run_dir, names.CROSS_ENTROPY_MODEL_DIR), examples,
                               features_uri),
      'scst': _scores(args.serving_model_dir, examples, features_uri),
      'train_sample_cider': [round(v, 4) for v in report['scst']['sample_cider']],
      'train_greedy_cider': [round(v, 4) for v in report['scst']['greedy_cider']],
      **run,
      'scst_epoch_seconds': report['scst']['seconds'],
  }


def summarise_cross_entropy(runs: List[Dict]) -> Dict:
  """The cross-entropy models' mean and seed range (max - min) of every score."""
  keys = list(runs[0]['cross_entropy'])
  return {'mean': {key: round(float(np.mean([run['cross_entropy'][key] for run in runs])), 4) for key in keys},
          'seed_range': {key: round(float(np.ptp([run['cross_entropy'][key] for run in runs])), 4)
                         for key in keys}}


def summarise(runs: List[Dict]) -> Dict:
  """Means, the stage's per-seed differences and the cross-entropy models' seed-to-seed range."""
  keys = list(runs[0]['cross_entropy'])
  mean = {model: {key: round(float(np.mean([run[model][key] for run in runs])), 4) for key in keys}
          for model in MODELS}
  differences = {key: [round(run['scst'][key] - run['cross_entropy'][key], 4) for run in runs] for key in keys}
  seed_range = {key: round(float(np.ptp([run['cross_entropy'][key] for run in runs])), 4) for key in keys}
  difference = {key: {'per_seed': values, 'mean': round(float(np.mean(values)), 4),
                      'min': min(values), 'max': max(values)} for key, values in differences.items()}
  # One seed has no spread to compare with: no verdict.
  helps = {split: (difference[f'{split}_cider']['mean'] > seed_range[f'{split}_cider'] if len(runs) > 1 else None)
           for split in SPLITS}
  ce_seconds = float(np.median([s for run in runs for s in run['cross_entropy_epoch_seconds'][1:]]))
  scst_seconds = float(np.median([s for run in runs for s in run['scst_epoch_seconds']]))
  return {'mean': mean, 'difference': difference, 'cross_entropy_seed_range': seed_range, 'helps': helps,
          'seconds_per_epoch': {'cross_entropy': round(ce_seconds, 2), 'scst': round(scst_seconds, 2),
                                'ratio_scst_to_cross_entropy': round(scst_seconds / ce_seconds, 2)}}


def _data(args, tmp: str, dataset: config_lib.EmbeddedDataset):
  """(Transform output, raw Examples, the main job's ImageFeatures uri or None): a main job's,
  or the embedded `dataset` built here."""
  if args.pipeline_root:
    return seeds_bench.pipeline_artifacts(args.pipeline_root)
  data = transformed_data.build_transformed_data(
      os.path.join(tmp, 'data'), dataset.num_images, dataset.image_size, transform_config=dataset.transform,
      dataset=dataset.name)
  return data, seeds_bench.examples_artifact(data.examples_uri), None


def _features(data, given_uri, tmp: str, encoder: config_lib.EncoderConfig, seed: int) -> str:
  """The ImageFeatures uri for `encoder`: `given_uri` if its pooling is encoder's, else built here."""
  if given_uri and features_artifact.artifact_encoder_info(given_uri).pooling == encoder.pooling:
    return given_uri
  return transformed_data.build_image_features(
      data.examples_uri, os.path.join(tmp, f'features-{encoder.pooling}'), encoder, seed).uri


def measure_decoder(decoder: str, dataset: config_lib.EmbeddedDataset, seeds: List[int], args, data,
                    examples, given_features, tmp: str) -> Dict:
  """Every seed of `decoder` trained and scored on `dataset`; the runs and their summaries."""
  encoder, config = config_lib.decoder_defaults(decoder, dataset)
  config = dataclasses.replace(config, epochs=args.epochs, scst_epochs=args.scst_epochs)
  features_uri = _features(data, given_features, tmp, encoder, config.seed)
  runs = [train(data, examples, features_uri, dataclasses.replace(config, seed=seed),
                os.path.join(tmp, f'{decoder}-seed-{seed}')) for seed in seeds]
  return {'pooling': encoder.pooling, 'runs': [{'seed': seed, **run} for seed, run in zip(seeds, runs)],
          **summarise_cross_entropy(runs), **({'scst_stage': summarise(runs)} if args.scst_epochs else {})}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--dataset', choices=list(config_lib.EMBEDDED_DATASETS), default=names.SHAPES_DATASET,
                      help='The embedded dataset to generate and train on (default: %(default)s).')
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--scst_epochs', type=int, default=5)
  parser.add_argument('--epochs', type=int, default=config_lib.EMBEDDED_TRAINER.epochs,
                      help='Cross-entropy epochs (default: the embedded main job\'s, %(default)s).')
  parser.add_argument('--decoders', default=config_lib.SHOW_AND_TELL,
                      help=f'Comma-separated, of {config_lib.DECODERS} (default: %(default)s).')
  parser.add_argument('--pipeline_root', default=None,
                      help="A finished main job's pipeline_root to take the data and features from "
                           '(default: generate the embedded dataset and run its executors here).')
  args = parser.parse_args()
  decoders = args.decoders.split(',')
  unknown = sorted(set(decoders) - set(config_lib.DECODERS))
  if unknown:
    parser.error(f'unknown decoders {unknown}; choose from {config_lib.DECODERS}')
  seeds = [int(seed) for seed in args.seeds.split(',')]
  dataset = config_lib.EMBEDDED_DATASETS[args.dataset]
  scst = config_lib.EMBEDDED_TRAINER
  with tempfile.TemporaryDirectory(prefix='quality_bench_') as tmp:
    data, examples, given_features = _data(args, tmp, dataset)
    measured = {decoder: measure_decoder(decoder, dataset, seeds, args, data, examples, given_features, tmp)
                for decoder in decoders}
  print(json.dumps({
      'dataset': dataset.name, 'seeds': seeds, 'epochs': args.epochs, 'scst_epochs': args.scst_epochs,
      'scst_samples': scst.scst_samples, 'scst_learning_rate': scst.scst_learning_rate,
      'cores': multiprocessing.cpu_count(), 'decoders': measured,
  }))


if __name__ == '__main__':
  main()
