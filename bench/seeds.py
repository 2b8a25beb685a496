"""The captioner's spread over seeds, and over float noise in its features.

The same command gives the same metrics on one machine, but another
processor's float32 backbone differs in the low bits of its features, and
training can amplify that: the embedded main job's eval BLEU-4 measured 0.894
on one machine and 0.825 on another. One run cannot tell a real change from
chance; this bench trains the captioner as the CaptionTrainer does
(components/training/trainer.run_fn) on the artifacts of a finished main job
(the ImageFeatureGen's cached features, the Transform's output), once per
seed, and scores the eval and demo splits as the CaptionEvaluator does
(components/evaluation/captioning.caption_and_score, from the cached features).

`--noise 1e-3` first multiplies every cached feature by (1 + 1e-3 * N(0, 1))
(seeded; a ReLU's zeros stay zero) in a copy of the artifact: what another
processor's kernels do to the features, exaggerated. The spread of the
perturbed runs around the unperturbed ones says how much a processor change
can move the metrics.

`--set name=value` overrides a field of the embedded dataset's TrainerConfig
(components/config.EMBEDDED_TRAINER), e.g. to measure an earlier setting:
`--set learning_rate_schedule=constant --set early_stopping_min_delta=0.05`.

Prints one JSON line: per seed, eval and demo BLEU-4 and the epochs trained
(and the same on perturbed features with --noise), then the mean and range
(max - min) of each.

Usage: python -m bench.seeds --pipeline_root outputs/pipeline_root [--seeds 0,1,2] [--noise 1e-3]
"""
import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components import config as config_lib
from components import names
from components.encoder import features_artifact
from components.evaluation import caption_metrics
from components.evaluation import captioning
from components.training import trainer
from testing import transformed_data


def latest_uri(pipeline_root: str, node: str, output: str) -> str:
  """The newest execution's folder of a node's output in a LocalDagRunner pipeline root."""
  parent = os.path.join(pipeline_root, node, output)
  executions = sorted((int(name) for name in os.listdir(parent) if name.isdigit()), reverse=True)
  if not executions:
    raise FileNotFoundError(f'No execution of {node} wrote {output} under {parent}')
  return os.path.join(parent, str(executions[0]))


def examples_artifact(examples_uri: str) -> standard_artifacts.Examples:
  """The raw Examples artifact at `examples_uri`, every split, as the evaluator receives it."""
  examples = standard_artifacts.Examples()
  examples.uri = examples_uri
  examples.split_names = artifact_utils.encode_split_names(list(names.SPLITS))
  return examples


def pipeline_artifacts(pipeline_root: str
                       ) -> Tuple[transformed_data.TransformedData, standard_artifacts.Examples, str]:
  """(Transform output, raw Examples, ImageFeatures uri) of a finished main job's pipeline_root."""
  root = os.path.abspath(pipeline_root)
  data = transformed_data.TransformedData(
      examples_uri=latest_uri(root, names.EXAMPLE_GEN, 'examples'),
      transform_graph_uri=latest_uri(root, names.TRANSFORM, 'transform_graph'),
      transformed_examples_uri=latest_uri(root, names.TRANSFORM, 'transformed_examples'))
  return data, examples_artifact(data.examples_uri), latest_uri(root, names.FEATURE_GEN, 'image_features')


def perturbed_copy(features_uri: str, out_dir: str, noise: float, seed: int) -> str:
  """A copy of an ImageFeatures artifact with every vector multiplied by (1 + noise * N(0, 1))."""
  shutil.copytree(features_uri, out_dir)
  rng = np.random.default_rng(seed)
  for split in names.SPLITS:
    vectors = features_artifact.read_features(features_uri, split)
    directory = features_artifact.split_dir(out_dir, split)
    shutil.rmtree(directory)
    os.makedirs(directory)
    with tf.io.TFRecordWriter(os.path.join(directory, 'features-perturbed.gz'),
                              options=tf.io.TFRecordOptions(compression_type='GZIP')) as writer:
      for image_id in sorted(vectors):
        vector = vectors[image_id]
        writer.write(features_artifact.feature_example(
            image_id, vector * (1.0 + noise * rng.standard_normal(vector.shape)).astype(np.float32)))
  return out_dir


def train_and_score(data: transformed_data.TransformedData, examples: standard_artifacts.Examples,
                    features_uri: str, config: config_lib.TrainerConfig, work_dir: str) -> Dict:
  """run_fn with `config`, then eval and demo BLEU-4 from the cached features."""
  args = transformed_data.fn_args(data, work_dir, config, features_uri)
  with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines; stdout holds the JSON only
    trainer.run_fn(args)
  with open(os.path.join(args.model_run_dir, names.TRAINING_REPORT_FILE)) as f:
    history = json.load(f)['history']
  result = {'epochs': len(history['val_loss']),
            'best_val_loss': round(min(history['val_loss']), 4)}
  for split in (names.EVAL_SPLIT, names.DEMO_SPLIT):
    scored = captioning.caption_and_score(args.serving_model_dir, examples, split,
                                          image_features_uri=features_uri)
    result[f'{split}_bleu4'] = round(scored.scores['corpus'][caption_metrics.BLEU_4], 4)
  return result


def spread(runs: List[Dict], key: str) -> Dict:
  values = [run[key] for run in runs]
  return {'mean': round(float(np.mean(values)), 4), 'range': round(max(values) - min(values), 4)}


def _override(config: config_lib.TrainerConfig, assignment: str) -> config_lib.TrainerConfig:
  name, _, value = assignment.partition('=')
  fields = {field.name: field for field in dataclasses.fields(config)}
  if name not in fields:
    raise SystemExit(f'--set {assignment}: TrainerConfig has no field {name!r}')
  current = getattr(config, name)
  if isinstance(current, bool):
    value = value.lower() in ('1', 'true', 'yes')
  elif current is not None:
    value = type(current)(value)
  return dataclasses.replace(config, **{name: value})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--pipeline_root', required=True,
                      help="A finished main job's pipeline_root (python -m pipeline.local.runner).")
  parser.add_argument('--seeds', default='0,1,2')
  parser.add_argument('--noise', type=float, default=0.0,
                      help='Also train on features times (1 + noise * N(0, 1)); 0: no perturbed runs.')
  parser.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                      help='Override a field of the embedded TrainerConfig (repeatable).')
  args = parser.parse_args()
  data, examples, features_uri = pipeline_artifacts(args.pipeline_root)
  config = config_lib.EMBEDDED_TRAINER
  for assignment in args.set:
    config = _override(config, assignment)
  seeds = [int(seed) for seed in args.seeds.split(',')]

  report = {'overrides': args.set, 'seeds': seeds}
  with tempfile.TemporaryDirectory(prefix='seeds_bench_') as tmp:
    variants = {'features': features_uri}
    if args.noise:
      variants['perturbed'] = perturbed_copy(features_uri, os.path.join(tmp, 'perturbed'), args.noise, 0)
      report['noise'] = args.noise
    for variant, uri in variants.items():
      runs = [train_and_score(data, examples, uri, dataclasses.replace(config, seed=seed),
                              os.path.join(tmp, f'{variant}-{seed}'))
              for seed in seeds]
      report[variant] = {'runs': runs, **{key: spread(runs, key)
                                          for key in ('eval_bleu4', 'demo_bleu4', 'epochs')}}
  print(json.dumps(report))


if __name__ == '__main__':
  main()
