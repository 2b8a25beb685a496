"""Flickr8k at its real size through ingestion and the feature pass, or the whole pipeline: nothing lost, and how fast.

Generates a folder in the official Flickr8k layout with Flickr8k's numbers:
`--num_images` ids (default 8,091, all in Flickr8k.token.txt) as 500x375
JPEGs (the shapes generator's scenes), and split files holding 6000:1000:1000
of every 8,091 ids, so that the rest are in no split, as in the real dataset
(the ExampleGen rejects them, reconciled). Its captions (`--captions`) are
the shapes generator's (32 words in all) or, with `flickr8k`, captions of
Flickr8k's statistics from testing/synthetic_captions.py: five per image of
about 11 words, about 7,800 distinct words with a Zipf-like spread. The
executor-only mode keeps the shapes captions by default (they do not change
its figures, and its figure in docs/benchmarks.md was measured with them); `--pipeline`
uses Flickr8k's statistics, which set the Trainers' vocabulary and sequence
length and so their epoch time. `--pipeline --decoder attention` runs the
attention decoder on real data's defaults (VGG16's block5_conv3 grid at 224
px, stored in bfloat16) and adds the feature artifact's bytes on disk.

Without `--pipeline`, as the local runner runs them (pipeline/beam_args.py:
the ExampleGen on DirectRunner threads, the feature pass in-process;
`--mode processes` runs the pass on worker processes instead, for comparison):
  * the ExampleGen executor on the folder;
  * the ImageFeatureGen executor on its examples: the paper's encoder, VGG16's
    fc2 at 224 px, with random weights (none can be downloaded here), in
    `--precision` (default `auto`, resolved as the runners resolve it).
With `--pipeline`, the whole pipeline as a person runs it, in a subprocess:
`python -m pipeline.local.runner --data_dir <folder> --backbone_weights none
--backbone_precision <precision> --decoder <--decoder>` (the real-data defaults otherwise: VGG16
fc2 at 224 px, or its grid for attention, the real-data recipe and epoch budgets; `--epochs N`
overrides the Trainers' budget for a quicker look), its progress on stderr; it fails
(exit 1, the runner's last lines) if the run fails. Its figures come from
what the run left: ML Metadata's executions (seconds from each one's start to
its end), the artifacts' counts and custom properties, and the Trainers'
training reports.
In both modes, bare single-process `model.predict` loops over `--sample`
train images, decoding included: with the pass's encoder in its precision
and in float32, each timed before and after the pass or the pipeline (mean),
so that load which comes and goes hits all of them.

Prints one JSON line: per split the images the pass read (the ExampleGen's
records) and the feature vectors it wrote (ids in its files, read back),
which must be equal; the pass's images/s (its Beam pass, model loading
included) against its precision's bare loop and against float32's; and
ingestion and generation seconds, or with `--pipeline` the run's seconds and
their ratio to the bare float32 loop's time over every image of the splits
(`bare_float32_loop_seconds`: the images over its rate, the baseline of a
first real run's time), the seconds of every component, each Trainer's epochs
(seconds, val_loss, the epoch early stopping kept), vocabulary size and
sequence length, the evaluation's seconds and BLEU-4 of both models, and the
runner's peak RSS (its largest process).

Usage: .venv/bin/python -m bench.real_scale [--num_images 8091] [--sample 128]
           [--mode in_process] [--workers 2] [--precision auto]
           [--pipeline [--epochs N] [--decoder show_and_tell]] [--captions {shapes,flickr8k}]
At ~5 images/s (float32, 2 cores) the full size's feature pass takes about 30
minutes; in bfloat16 on a CPU with AMX-BF16 about a quarter of that.
"""
import argparse
import collections
import dataclasses
import glob
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from typing import Callable, Dict, List, Sequence

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components import artifacts
from components import config as config_lib
from components import names
from components import records
from components.encoder import features_artifact
from components.encoder import backbone_handler
from components.encoder import feature_gen
from components.encoder import image_features
from components.encoder import precision as precision_lib
from components.evaluation import caption_metrics
from components.ingestion import flickr8k
from components.ingestion import shapes_dataset
from pipeline import beam_args
from pipeline.local import run as local_run
from testing import executors
from testing import feature_pass
from testing import metadata
from testing import synthetic_captions
from testing import timing

FLICKR8K_IDS = synthetic_captions.FLICKR8K_IMAGES
# Ids per split file out of every FLICKR8K_IDS (the official split files).
FLICKR8K_SPLIT_IDS = {names.TRAIN_SPLIT: 6000, names.EVAL_SPLIT: 1000, names.DEMO_SPLIT: 1000}
JPEG_SIZE = (500, 375)
_MODES = {'in_process': lambda workers: beam_args.direct_node_beam_args(workers)[names.FEATURE_GEN],
          'processes': beam_args.direct_beam_args}
SHAPES_CAPTIONS, FLICKR8K_CAPTIONS = 'shapes', 'flickr8k'
# The repository root: the runner subprocess imports this checkout's code.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LOG_TAIL_LINES = 40


def generate_flickr8k(data_dir: str, num_images: int) -> None:
  """The shapes dataset in the official layout at Flickr8k's image size, its
  split files cut to Flickr8k's proportions (module docstring)."""
  shapes_dataset.generate(data_dir, num_images=num_images, image_size=JPEG_SIZE[0],
                          image_height=JPEG_SIZE[1], layout=shapes_dataset.OFFICIAL,
                          processes=multiprocessing.cpu_count())
  for split, file_name in flickr8k.SPLIT_FILES.items():
    path = os.path.join(data_dir, file_name)
    with open(path, encoding='utf-8') as f:
      ids = f.read().splitlines()
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
      f.writelines(line + '\n' for line in ids[:num_images * FLICKR8K_SPLIT_IDS[split] // FLICKR8K_IDS])


def _encoder(decoder: str) -> config_lib.EncoderConfig:
  """The real-data encoder the runner builds for `decoder`, with random weights (none can be downloaded)."""
  return dataclasses.replace(config_lib.decoder_defaults(decoder)[0], backbone_weights=None)


def _feature_pass(examples, out_dir: str, options, precision: str) -> artifacts.ImageFeatures:
  encoder = dataclasses.replace(_encoder(config_lib.SHOW_AND_TELL), precision=precision)
  return executors.run_executor(
      feature_gen.ImageFeatureGen.EXECUTOR_SPEC.executor_class(executors.beam_context(options)),
      {'examples': examples}, {names.IMAGE_FEATURES_KEY: artifacts.ImageFeatures},
      {key: value for key, value in feature_gen.parameters(encoder, seed=0).items() if value is not None},
      out_dir)[names.IMAGE_FEATURES_KEY]


def _bare_rate(backbones, sample) -> Dict[str, float]:
  """precision -> images/s of a bare predict loop over `sample` with that backbone."""
  return {precision: feature_pass.predict_rate(backbone, sample, backbone_handler.DEFAULT_BATCH_SIZE)
          for precision, backbone in backbones.items()}


def _counts(examples, features_uri: str) -> Dict[str, Dict[str, int]]:
  """Per split: records the pass read and feature vectors it wrote (ids read back)."""
  return {split: {
      'read': len(features_artifact.image_ids(records.split_files(examples, split))),
      'written': len(features_artifact.image_ids(features_artifact.feature_files(features_uri, split)))}
      for split in artifact_utils.decode_split_names(examples.split_names)}


def _around_bare_loops(precision: str, sample: Sequence[bytes], run: Callable[[], object],
                       decoder: str = config_lib.SHOW_AND_TELL):
  """(run(), precision -> images/s of the bare loops of `precision` and
  float32, the mean of a timing before `run` and one after)."""
  # The pass's encoder as the pass builds it (random weights), and in float32.
  backbones = {p: image_features.build_feature_extractor(dataclasses.replace(_encoder(decoder), precision=p))
               for p in {precision, precision_lib.FLOAT32}}
  before = _bare_rate(backbones, sample)
  result = run()
  after = _bare_rate(backbones, sample)
  return result, {p: (before[p] + after[p]) / 2 for p in backbones}


def _speed_figures(image_features_artifact, bare: Dict[str, float], precision: str) -> Dict[str, float]:
  """The pass's images/s (its artifact's counters) against the bare loops."""
  passes = image_features_artifact.get_int_custom_property(names.BACKBONE_PASSES_PROPERTY)
  rate = passes / image_features_artifact.mlmd_artifact.custom_properties[
      features_artifact.FEATURE_PASS_SECONDS_PROPERTY].double_value
  return {
      'feature_pass_images_per_second': round(rate, 2),
      'bare_predict_images_per_second': round(bare[precision], 2),
      'ratio_feature_pass_to_bare_predict': round(rate / bare[precision], 2),
      'float32_bare_predict_images_per_second': round(bare[precision_lib.FLOAT32], 2),
      'ratio_feature_pass_to_float32_bare_predict': round(rate / bare[precision_lib.FLOAT32], 2),
  }


def _executors(args, tmp: str, data_dir: str, precision: str) -> Dict:
  """The ExampleGen and ImageFeatureGen executors on the folder (module docstring)."""
  with timing.Stopwatch() as ingestion:
    examples, _ = executors.run_example_gen(
        data_dir, os.path.join(tmp, 'ingestion'),
        beam_args=beam_args.direct_node_beam_args(args.workers)[names.EXAMPLE_GEN])
  sample = [example.image for example, _ in zip(records.iter_split_examples(examples, 'train'),
                                                 range(args.sample))]
  image_features_artifact, bare = _around_bare_loops(precision, sample, lambda: _feature_pass(
      examples, os.path.join(tmp, 'features'), _MODES[args.mode](args.workers), precision))
  counts = _counts(examples, image_features_artifact.uri)
  return {'mode': args.mode, 'workers': args.workers, 'per_split': counts,
          'all_written': all(c['read'] == c['written'] for c in counts.values()),
          **_speed_figures(image_features_artifact, bare, precision),
          'ingestion_seconds': round(ingestion.seconds, 1)}


def _train_sample(data_dir: str, size: int) -> List[bytes]:
  """The files of the first `size` train ids: what the ExampleGen stores (byte for byte)."""
  with open(os.path.join(data_dir, flickr8k.SPLIT_FILES[names.TRAIN_SPLIT]), encoding='utf-8') as f:
    ids = f.read().split()[:size]
  sample = []
  for image_id in ids:
    with open(os.path.join(data_dir, flickr8k.OFFICIAL_IMAGE_DIRS[0], image_id), 'rb') as f:
      sample.append(f.read())
  return sample


def _run_local_runner(data_dir: str, output_dir: str, args) -> float:
  """Runs the local runner as a person would (module docstring); its peak RSS in MiB.

  Raises:
    SystemExit: naming the command and its log, and quoting its last lines on the
      terminal (where the runner reports a failure), if it fails.
  """
  command = [sys.executable, '-m', 'pipeline.local.runner', '--data_dir', data_dir,
             '--output_dir', output_dir, '--backbone_weights', 'none', '--backbone_precision', args.precision,
             '--decoder', args.decoder, *(['--epochs', str(args.epochs)] if args.epochs else [])]
  runner = subprocess.Popen(command, cwd=_REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  tail = collections.deque(maxlen=_LOG_TAIL_LINES)
  for line in runner.stdout:  # its progress, on our stderr: stdout holds the JSON line only
    sys.stderr.write(line)
    tail.append(line)
  # wait4: the runner's own usage, the largest of it and its waited-for children's peak RSS.
  _, status, usage = os.wait4(runner.pid, 0)
  runner.returncode = os.waitstatus_to_exitcode(status)
  if runner.returncode:
    logs = sorted(glob.glob(os.path.join(output_dir, 'logs', 'run-*.log')))
    raise SystemExit(f'The pipeline failed (exit {runner.returncode}): {" ".join(command)}\n'
                     f'Full log: {logs[-1] if logs else "none"}; its last lines on the terminal:\n'
                     f'{"".join(tail)}')
  return usage.ru_maxrss / 1024


def _trainer_figures(store, execution) -> Dict:
  """A Trainer's epoch seconds, vocabulary size and sequence length, from its training report."""
  [model_run] = metadata.outputs(store, execution, standard_artifacts.ModelRun.TYPE_NAME)
  with open(os.path.join(model_run.uri, names.TRAINING_REPORT_FILE), encoding='utf-8') as f:
    report = json.load(f)
  val_loss = report['history']['val_loss']
  return {'epoch_budget': report['config']['epochs'], 'epochs_run': len(val_loss),
          'kept_epoch': val_loss.index(min(val_loss)) + 1,
          'val_loss': [round(v, 4) for v in val_loss],
          'epoch_seconds': [round(s, 1) for s in report['epoch_seconds']],
          'vocabulary_size': report['vocabulary_size'], 'sequence_length': report['sequence_length']}


def _run_figures(output_dir: str) -> Dict:
  """What the run left (module docstring); the ImageFeatures artifact under 'image_features'."""
  store = metadata_store.MetadataStore(local_run.RunOutputs(output_dir).connection_config)
  executions = {metadata.node_id(store, e): e for e in sorted(store.get_executions(), key=lambda e: e.id)}
  not_complete = [node for node, e in executions.items()
                  if e.last_known_state != metadata_store_pb2.Execution.COMPLETE]
  if not_complete:
    raise SystemExit(f'Executions not COMPLETE in a fresh run: {not_complete}')
  [examples] = metadata.outputs(store, executions[names.EXAMPLE_GEN], standard_artifacts.Examples.TYPE_NAME)
  [image_features_artifact] = metadata.outputs(store, executions[names.FEATURE_GEN],
                                               artifacts.ImageFeatures.TYPE_NAME)
  counts = _counts(examples, image_features_artifact.uri)
  feature_bytes = sum(os.path.getsize(path) for split in counts
                      for path in features_artifact.feature_files(image_features_artifact.uri, split))
  return {'image_features': image_features_artifact, 'feature_artifact_bytes': feature_bytes,
          'per_split': counts, 'all_written': all(c['read'] == c['written'] for c in counts.values()),
          'component_seconds': {node: round(metadata.seconds(e), 1) for node, e in executions.items()},
          'trainers': {node: _trainer_figures(store, executions[node]) for node in names.TRAINERS},
          'evaluation_seconds': round(metadata.seconds(executions[names.CAPTION_EVALUATOR]), 1)}


def _bleu4(output_dir: str) -> Dict[str, float]:
  """The evaluation's BLEU-4 of each model it scored (role -> score), from the run's summary."""
  with open(local_run.RunOutputs(output_dir).summary_path, encoding='utf-8') as f:
    evaluation = json.load(f)['evaluation']
  return {role: round(evaluation[role]['metrics'][caption_metrics.BLEU_4], 4)
          for role in ('captioner', 'baseline') if evaluation.get(role)}


def _pipeline(args, tmp: str, data_dir: str, precision: str) -> Dict:
  """The local runner on the folder, between bare loops; its figures (module docstring)."""
  output_dir = os.path.join(tmp, 'run')
  run = timing.Stopwatch()

  def timed_run():
    with run:
      return _run_local_runner(data_dir, output_dir, args)

  with timing.Stopwatch() as run_and_loops:
    peak_rss_mib, bare = _around_bare_loops(precision, _train_sample(data_dir, args.sample), timed_run,
                                            args.decoder)
  figures = _run_figures(output_dir)
  images = sum(split['written'] for split in figures['per_split'].values())
  bare_seconds = images / bare[precision_lib.FLOAT32]
  return {'epochs': args.epochs or 'defaults', 'decoder': args.decoder, 'run_seconds': round(run.seconds, 1),
          'bare_float32_loop_seconds': round(bare_seconds, 1),
          'ratio_run_to_bare_float32_loop': round(run.seconds / bare_seconds, 2),
          'per_split': figures['per_split'], 'all_written': figures['all_written'],
          'feature_artifact_bytes': figures['feature_artifact_bytes'],
          **_speed_figures(figures.pop('image_features'), bare, precision),
          'component_seconds': figures['component_seconds'], 'trainers': figures['trainers'],
          'evaluation_seconds': figures['evaluation_seconds'],
          'bleu4': _bleu4(output_dir),
          'runner_peak_rss_mib': round(peak_rss_mib),
          'pipeline_and_bare_loops_seconds': round(run_and_loops.seconds, 1)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--num_images', type=int, default=FLICKR8K_IDS,
                      help='Image ids (default %(default)s, Flickr8k).')
  parser.add_argument('--sample', type=int, default=128, help='Images of the bare predict loop.')
  parser.add_argument('--mode', choices=sorted(_MODES), default='in_process',
                      help='How the DirectRunner runs the feature pass (default: as the local runner).')
  parser.add_argument('--workers', type=int, default=2, help='Beam workers (threads or processes).')
  parser.add_argument('--precision', choices=config_lib.PRECISIONS, default='auto',
                      help="The feature pass's precision (default %(default)s: as the runners resolve it).")
  parser.add_argument('--pipeline', action='store_true',
                      help='Run the whole pipeline with the local runner instead of the two executors.')
  parser.add_argument('--epochs', type=int, default=None,
                      help="With --pipeline: the Trainers' epoch budget (default: the real-data defaults').")
  parser.add_argument('--decoder', choices=config_lib.DECODERS, default=config_lib.SHOW_AND_TELL,
                      help="With --pipeline: the runner's --decoder (default %(default)s).")
  parser.add_argument('--captions', choices=(SHAPES_CAPTIONS, FLICKR8K_CAPTIONS), default=None,
                      help=f"The folder's captions (default: {FLICKR8K_CAPTIONS} with --pipeline, "
                           f'{SHAPES_CAPTIONS} without).')
  args = parser.parse_args()
  if args.decoder != config_lib.SHOW_AND_TELL and not args.pipeline:
    parser.error('--decoder needs --pipeline (the executor-only mode measures the fc2 feature pass)')
  precision = precision_lib.resolve(args.precision)
  captions = args.captions or (FLICKR8K_CAPTIONS if args.pipeline else SHAPES_CAPTIONS)

  with tempfile.TemporaryDirectory(prefix='real_scale_bench_') as tmp:
    data_dir = os.path.join(tmp, 'Flickr8k')
    with timing.Stopwatch() as generation:
      generate_flickr8k(data_dir, args.num_images)
      if captions == FLICKR8K_CAPTIONS:
        synthetic_captions.write_flickr8k_token_file(data_dir)
    figures = (_pipeline if args.pipeline else _executors)(args, tmp, data_dir, precision)
  print(json.dumps({
      'num_images': args.num_images, 'jpeg_size': '%dx%d' % JPEG_SIZE, 'captions': captions,
      'encoder': '{0.backbone} {0.pooling} {0.input_size}'.format(
          _encoder(args.decoder if args.pipeline else config_lib.SHOW_AND_TELL)), 'precision': precision, 'cores': multiprocessing.cpu_count(),
      **figures, 'generation_seconds': round(generation.seconds, 1),
  }))


if __name__ == '__main__':
  main()
