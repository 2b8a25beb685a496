"""The bulk captioning job: image paths -> checked images -> caption signature -> JSONL, every input accounted for.

Layout under --output (a local folder or a bucket path):
  captions-<run id>-SSSSS-of-NNNNN.jsonl  one JSON object per captioned image:
      path, caption, log_probability, captions / log_probabilities (the --top_k
      best of the beam search, best first), model_version
  rejects-<run id>-SSSSS-of-NNNNN.jsonl   one per rejected input: path, reason
      (a components/ingestion/rules.py image-level reason), detail, model_version
Each run writes its own set through Beam's WriteToText, which commits a set
only when its whole run succeeds (temporary files, then renames): a killed run
leaves no partial line and no partial file, only a beam-temp-* folder. A rerun
over the same --output skips the paths some run already captioned with the same
model version (inputs.captioned) and tries the rest again, rejects included
(their cause may have been fixed).

The pipeline (one fused stage after the reshuffle of the path files, so image
bytes never wait in the runner's buffers and memory stays flat at any size):
  path files -> Reshuffle -> paths -> read + ingestion checks (image_check)
  -> RunInference(CaptionHandler, keyed by path; a rejected input passes
  through it as its CaptionFailure) -> lines + progress
  -> WriteToText(captions) / WriteToText(rejects).
Every stage counts what it reads and writes (Beam counters in
handler.METRICS_NAMESPACE); after the run, the counters must agree and the
files written must hold each input path exactly once, or the job fails
(LostOutputError) naming what went missing.
"""
import collections
import dataclasses
import datetime
import json
import logging
import os
import time
import uuid
from typing import Dict, Iterator, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.ml.inference import base as inference_base
from apache_beam.options import pipeline_options
import tensorflow as tf

from components import beam_direct
from components import progress
from components.ingestion import image_check
from serving.bulk import handler as handler_lib
from serving.bulk import inputs

# The paths are spread over at most this many files, the units the runner
# hands its workers (as components/ingestion/verify.py does with its records).
_MAX_PATH_FILES = 256
PROGRESS_DESCRIPTION = 'bulk captioning'
_REJECTED_TAG = 'rejected'
# Counters in handler.METRICS_NAMESPACE, stage by stage.
PATHS_READ = 'paths_read'
IMAGES_PASSED = 'images_passed_checks'
REJECTED_BY_CHECKS = 'rejected_by_checks'
INFERENCES = 'num_inferences'  # RunInference's own
RESULTS_READ = 'results_read'
REJECTED_BY_MODEL = 'rejected_by_model'
CAPTION_LINES = 'caption_lines'
REJECT_LINES = 'reject_lines'
# Paths named in a LostOutputError.
_SHOWN_PATHS = 5


class LostOutputError(RuntimeError):
  """The run's outputs do not account for every input exactly once."""


@dataclasses.dataclass(frozen=True)
class Summary:
  run_id: str
  model_version: str
  inputs: int  # paths --input names
  skipped: int  # captioned by an earlier run with this model version
  captioned: int
  rejected: int
  seconds: float  # the Beam run, model loading included

  def line(self) -> str:
    rate = (self.captioned + self.rejected) / max(self.seconds, 1e-9)
    return (f'bulk captioning done: {self.captioned} captioned, {self.rejected} rejected, '
            f'{self.skipped} skipped (captioned before), {self.seconds:.1f} s, {rate:.1f} images/s, '
            f'model version {self.model_version}')


def new_run_id() -> str:
  """Sorts by start time; unique among runs sharing an output."""
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S') + '-' + uuid.uuid4().hex[:6]


def _counter(name: str):
  return beam.metrics.Metrics.counter(handler_lib.METRICS_NAMESPACE, name)


class _ReadAndCheck(beam.DoFn):
  """path -> (path, image bytes), or (path, CaptionFailure) with the ingestion's reason."""

  def __init__(self):
    self._read, self._passed, self._rejected = (_counter(PATHS_READ), _counter(IMAGES_PASSED),
                                                _counter(REJECTED_BY_CHECKS))

  def process(self, path: str):
    self._read.inc()
    checked = image_check.read_and_check(path)
    if checked.ok:
      self._passed.inc()
      yield path, checked.image
    else:
      self._rejected.inc()
      yield path, handler_lib.CaptionFailure(checked.reason, checked.detail)


class _ToLine(beam.DoFn):
  """(path, PredictionResult) -> a caption JSON line, or a reject line to the rejected output;
  reports images done of `total` (components/progress.py) as they come out of the model."""

  def __init__(self, version: str, top_k: int, total: int, description: str):
    self._version, self._top_k, self._total, self._description = version, top_k, total, description
    self._read, self._rejected_by_model = _counter(RESULTS_READ), _counter(REJECTED_BY_MODEL)
    self._caption_lines, self._reject_lines = _counter(CAPTION_LINES), _counter(REJECT_LINES)

  def setup(self):
    self._tracker = progress.Tracker(self._total, self._description)

  def process(self, keyed: Tuple[str, inference_base.PredictionResult]):
    path, result = keyed
    self._read.inc()
    answer = result.inference
    if isinstance(answer, handler_lib.CaptionFailure):
      if not isinstance(result.example, handler_lib.CaptionFailure):
        self._rejected_by_model.inc()
      self._reject_lines.inc()
      yield beam.pvalue.TaggedOutput(_REJECTED_TAG, json.dumps({
          inputs.PATH_FIELD: path, 'reason': answer.reason, 'detail': answer.detail,
          inputs.MODEL_VERSION_FIELD: self._version}))
    else:
      self._caption_lines.inc()
      yield json.dumps({
          inputs.PATH_FIELD: path,
          'caption': answer.captions[0],
          'log_probability': answer.log_probabilities[0],
          'captions': answer.top_captions[0][:self._top_k],
          'log_probabilities': answer.top_log_probabilities[0][:self._top_k],
          inputs.MODEL_VERSION_FIELD: self._version,
      })
    self._tracker.advance()


def write_path_files(paths: Sequence[str], work_dir: str) -> List[str]:
  """The pipeline's input: `paths` in order, a JSON string a line, in up to _MAX_PATH_FILES files."""
  tf.io.gfile.makedirs(work_dir)
  per_file = max(1, -(-len(paths) // _MAX_PATH_FILES))
  files = []
  for index, start in enumerate(range(0, len(paths), per_file)):
    files.append(os.path.join(work_dir, f'paths-{index:05d}.jsonl'))
    with tf.io.gfile.GFile(files[-1], 'w') as f:
      f.write(''.join(json.dumps(path) + '\n' for path in paths[start:start + per_file]))
  return files


def _read_path_file(path_file: str) -> Iterator[str]:
  with tf.io.gfile.GFile(path_file) as f:
    for line in f:
      yield json.loads(line)


def build(pipeline: beam.Pipeline, path_files: Sequence[str], model: inputs.Model, output: str, run_id: str,
          total: int, top_k: int, batch_size: int, description: str = PROGRESS_DESCRIPTION) -> None:
  """Adds the job to `pipeline` (module docstring); `total`: the paths in `path_files`."""
  lines = (pipeline
           | 'ListPathFiles' >> beam.Create(list(path_files), reshuffle=False)
           | 'SpreadPathFiles' >> beam.Reshuffle()
           | 'ReadPaths' >> beam.FlatMap(_read_path_file)
           | 'ReadAndCheck' >> beam.ParDo(_ReadAndCheck())
           | 'Caption' >> inference_base.RunInference(inference_base.KeyedModelHandler(
               handler_lib.CaptionHandler(model.path, batch_size)))
           | 'ToLines' >> beam.ParDo(_ToLine(model.version, top_k, total, description)).with_outputs(
               _REJECTED_TAG, main=inputs.CAPTIONS_PREFIX))
  for kind, kind_lines in ((inputs.CAPTIONS_PREFIX, lines[inputs.CAPTIONS_PREFIX]),
                           (inputs.REJECTS_PREFIX, lines[_REJECTED_TAG])):
    _ = kind_lines | f'Write[{kind}]' >> beam.io.WriteToText(os.path.join(output, f'{kind}-{run_id}'),
                                                             file_name_suffix=inputs.OUTPUT_SUFFIX)


def _counters(result) -> Dict[str, int]:
  found = result.metrics().query(
      beam.metrics.MetricsFilter().with_namespace(handler_lib.METRICS_NAMESPACE))['counters']
  totals = collections.Counter()
  for counter in found:  # committed where the runner reports it (Dataflow, Direct), else attempted
    totals[counter.key.metric.name] += counter.committed if counter.committed is not None else counter.attempted
  return totals


def _shown(paths) -> str:
  paths = sorted(paths)
  return ', '.join(paths[:_SHOWN_PATHS]) + (f' and {len(paths) - _SHOWN_PATHS} more' if len(paths) > _SHOWN_PATHS
                                             else '')


def reconcile(todo: Sequence[str], output: str, run_id: str, counters: Dict[str, int]) -> Tuple[int, int]:
  """(captioned, rejected) that run `run_id` wrote; LostOutputError unless its files hold every path of
  `todo` exactly once and every stage's counters agree."""
  written = {kind: [line[inputs.PATH_FIELD] for line in inputs.read_lines(inputs.output_files(output, kind, run_id))]
             for kind in (inputs.CAPTIONS_PREFIX, inputs.REJECTS_PREFIX)}
  seen = collections.Counter(written[inputs.CAPTIONS_PREFIX] + written[inputs.REJECTS_PREFIX])
  wanted = set(todo)
  problems = []
  missing = wanted - set(seen)
  if missing:
    problems.append(f'{len(missing)} inputs in neither file ({_shown(missing)})')
  repeated = [path for path, count in seen.items() if count > 1]
  if repeated:
    problems.append(f'{len(repeated)} inputs written more than once ({_shown(repeated)})')
  unknown = set(seen) - wanted
  if unknown:
    problems.append(f'{len(unknown)} paths written that were not inputs ({_shown(unknown)})')
  c = counters
  stages = [
      ('paths read', c[PATHS_READ], 'inputs', len(todo)),
      ('images passed + rejected by the checks', c[IMAGES_PASSED] + c[REJECTED_BY_CHECKS], 'paths read',
       c[PATHS_READ]),
      ('inputs through RunInference', c[INFERENCES], 'paths read', c[PATHS_READ]),
      ('results read', c[RESULTS_READ], 'inputs through RunInference', c[INFERENCES]),
      ('caption + reject lines', c[CAPTION_LINES] + c[REJECT_LINES], 'results read', c[RESULTS_READ]),
      ('reject lines', c[REJECT_LINES], 'rejected by the checks + by the model',
       c[REJECTED_BY_CHECKS] + c[REJECTED_BY_MODEL]),
      ('caption lines in the files', len(written[inputs.CAPTIONS_PREFIX]), 'caption lines', c[CAPTION_LINES]),
      ('reject lines in the files', len(written[inputs.REJECTS_PREFIX]), 'reject lines', c[REJECT_LINES]),
  ]
  problems.extend(f'{name} {got} != {other} {want}' for name, got, other, want in stages if got != want)
  if problems:
    raise LostOutputError(f'run {run_id} under {output} does not account for its {len(todo)} inputs: '
                          + '; '.join(problems))
  return len(written[inputs.CAPTIONS_PREFIX]), len(written[inputs.REJECTS_PREFIX])


def beam_options(beam_args: Sequence[str]) -> pipeline_options.PipelineOptions:
  """The Beam arguments as given, plus beam_direct.IN_PROCESS_ARGS (why there) when they name no
  other runner and no DirectRunner mode."""
  args = list(beam_args)
  runner = pipeline_options.PipelineOptions(args).view_as(pipeline_options.StandardOptions).runner
  if runner in (None, 'DirectRunner', 'direct') and not any(a.startswith('--direct_running_mode') for a in args):
    args.extend(beam_direct.IN_PROCESS_ARGS)
  return pipeline_options.PipelineOptions(args)


def _run_part(todo: Sequence[str], model: inputs.Model, output: str, run_id: str, beam_args: Sequence[str],
              top_k: int, batch_size: int, description: str) -> Tuple[int, int, float]:
  """(captioned, rejected, seconds) of one Beam run over `todo`, whose files are committed and reconciled."""
  work_dir = os.path.join(output, f'.bulk-work-{run_id}')
  path_files = write_path_files(todo, work_dir)
  pipeline = beam.Pipeline(options=beam_options(beam_args))
  build(pipeline, path_files, model, output, run_id, len(todo), top_k, batch_size, description)
  start = time.monotonic()
  result = pipeline.run()
  result.wait_until_finish()
  seconds = time.monotonic() - start
  captioned, rejected = reconcile(todo, output, run_id, _counters(result))
  tf.io.gfile.rmtree(work_dir)
  return captioned, rejected, seconds


def run(input_spec: str, model_spec: str, output: str, beam_args: Sequence[str] = (), top_k: int = 1,
        batch_size: int = handler_lib.DEFAULT_BATCH_SIZE, run_id: str = '', commit_every: int = 0) -> Summary:
  """Captions what `input_spec` names with `model_spec` into `output` (module docstring).

  commit_every: images per Beam run, each committing its own files, so that a
  killed job loses at most one part's work (0: one Beam run for everything).
  Each part loads the model again.

  Raises inputs.InputError for a bad input, model or output, LostOutputError
  if a part's files do not account for each of its inputs.
  """
  model = inputs.resolve_model(model_spec)
  paths = inputs.list_inputs(input_spec)
  tf.io.gfile.makedirs(output)
  todo, skipped = inputs.split_done(paths, inputs.captioned(output, model.version))
  run_id = run_id or new_run_id()
  logging.info('Bulk run %s: %d inputs, %d captioned before with model version %s, %d to do; model %s',
               run_id, len(paths), skipped, model.version, len(todo), model.path)
  size = commit_every or max(len(todo), 1)
  parts = [todo[start:start + size] for start in range(0, len(todo), size)]
  captioned = rejected = 0
  seconds = 0.0
  for index, part in enumerate(parts):
    part_id, description = run_id, PROGRESS_DESCRIPTION
    if len(parts) > 1:
      part_id, description = f'{run_id}-part{index:05d}', f'{PROGRESS_DESCRIPTION} (part {index + 1} of {len(parts)})'
    part_captioned, part_rejected, part_seconds = _run_part(part, model, output, part_id, beam_args, top_k,
                                                            batch_size, description)
    captioned, rejected, seconds = captioned + part_captioned, rejected + part_rejected, seconds + part_seconds
  return Summary(run_id, model.version, len(paths), skipped, captioned, rejected, seconds)
