"""ImageCaptionExampleGen: a captioning dataset folder in, validated tf.Examples out.

Data contract
-------------
Input (`input_base`): a dataset folder in one of the layouts of
components/ingestion/layouts.py (MS COCO 2014, Flickr30k, official or Kaggle
Flickr8k, a Karpathy split file with its images); components/ingestion/rules.py
has every validation, repair and reject rule, the same for every layout. A
folder in none of the layouts fails the component at once. `restval_split`:
the split Karpathy's 'restval' images go to (default 'train').

Output `examples` (standard Examples artifact): gzipped TFRecord shards
`Split-<split>/data_tfrecord-*.gz` for the splits names.TRAIN_SPLIT,
names.EVAL_SPLIT and names.DEMO_SPLIT, one serialized tf.train.Example
per image, in the layout of components/records.py:
  names.IMAGE_ID_KEY  bytes [1]              image file name (the id)
  names.IMAGE_KEY     bytes [1]              the image file, byte for byte
  names.CAPTIONS_KEY  bytes [num_captions]   its valid captions, UTF-8
Every written image decodes with tf.io.decode_image(channels=3), has at most
names.MAX_IMAGE_PIXELS pixels and at least one caption; every split holds at
least one image (else the component fails, naming the reject report).

Output `rejects` (IngestionReport artifact):
  rejects.jsonl  one JSON object per rejected image or caption line, sorted:
                 {"level": "image"|"caption", "id", "file", "line",
                  "reason", "detail"}
  summary.json   counts per split, per reject reason and per repair, with
                 totals that reconcile (see `summarise`); also logged and
                 copied to the artifact's custom properties.

How it streams (the Beam stages are in components/ingestion/verify.py, which
imports no TFX so that workers start faster): the text files are parsed once,
in the driver process, into one small record per image (id, path, split,
captions: no image bytes), which are written as JSON lines into up to a few
hundred files in a work folder. Beam spreads those file names
over the workers, and each worker streams the records of its files, reads,
checks and converts their images and writes them straight into its own
TFRecord shards. Neither the image bytes nor the records travel through the
runner, and no Beam element holds more than one image: memory per process
stays flat as the dataset grows (the driver keeps the text index, a few
hundred bytes per caption). The images checked of the total are reported
through components/progress.py, one count per worker process. TFX's stock WriteSplit is not used because it
reshuffles the serialized examples, which the local DirectRunner holds in the
driver's memory: the whole dataset's JPEG bytes.

Why a custom component: the stock ExampleGen reads its input once per split
pattern, while these datasets define their splits by separate files that must
be cross-checked with the captions and the image folders (an id in two
splits, in none, ...).
"""

import collections
import json
import os
import tempfile
from typing import Any, Dict, Iterable, List, Tuple

from absl import logging
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import driver
from tfx.components.example_gen import utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ExecutionParameter
from tfx.utils import io_utils

from components import names
from components import progress
from components.artifacts import IngestionReport
from components.ingestion import layouts
from components.ingestion import rules
from components.ingestion import verify

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
REJECTS_KEY = 'rejects'
RESTVAL_SPLIT_KEY = 'restval_split'

_OUTPUT_FILE_FORMAT = example_gen_pb2.FORMAT_TFRECORDS_GZIP


class EmptySplitError(ValueError):
  """A split the pipeline needs (train, eval or demo) holds no image."""


def summarise(dataset: rules.Dataset, tally: Dict[str, List[int]],
              rejects: Iterable[rules.Reject], not_read: int = 0) -> Dict[str, Any]:
  """Builds summary.json from the text pass, the Beam tally and all rejects.

  `tally` is {split: [images written, captions written]}; `not_read` counts
  the records that passed the text checks but whose images were never read
  (the run stopped early because a split was empty). Reconciliation, both
  must hold for 'reconciled' to be true:
    images.input == images.total_written + images.total_rejected + images.not_read
    caption_lines.input == caption_lines.written + repaired['duplicate caption']
        + sum(caption_lines.rejected) + dropped_with_rejected_image
        + not_read_captions
  (the other repairs keep their line, so they are not in the sum).
  """
  image_reasons, caption_reasons = [], []
  dropped_with_image = 0
  for reject in rejects:
    if reject.level == rules.IMAGE_LEVEL:
      image_reasons.append(reject.reason)
      dropped_with_image += reject.num_captions
    else:
      caption_reasons.append(reject.reason)
  written = {split: tally[split][0] for split in names.SPLITS}
  captions_written = sum(tally[split][1] for split in names.SPLITS)
  not_read_captions = (
      sum(len(r.captions) for r in dataset.records) if not_read else 0)
  images = {
      'input': dataset.num_input_ids,
      'written': written,
      'rejected': rules.count_by(image_reasons),
      'total_written': sum(written.values()),
      'total_rejected': len(image_reasons),
      'not_read': not_read,
  }
  caption_lines = {
      'input': dataset.num_caption_lines,
      'written': captions_written,
      'repaired': dataset.repairs,
      'rejected': rules.count_by(caption_reasons),
      'dropped_with_rejected_image': dropped_with_image,
      'not_read': not_read_captions,
  }
  reconciled = (
      images['input'] == images['total_written'] + images['total_rejected'] + not_read
      and caption_lines['input'] == (
          captions_written + dataset.repairs.get(rules.DUPLICATE_CAPTION, 0) +
          len(caption_reasons) + dropped_with_image + not_read_captions))
  return {
      'input_base': dataset.layout.root,
      'layout': dataset.layout.name,
      'images': images,
      'caption_lines': caption_lines,
      'reconciled': reconciled,
  }


def _write_report(report_uri: str, rejects: List[rules.Reject],
                  summary: Dict[str, Any]) -> None:
  """Writes rejects.jsonl (sorted) and summary.json into the report folder."""
  tf.io.gfile.makedirs(report_uri)
  with tf.io.gfile.GFile(os.path.join(report_uri, names.REJECTS_FILE), 'w') as f:
    f.write(''.join(json.dumps(reject.to_json_dict(), sort_keys=True) + '\n'
                    for reject in sorted(rejects, key=rules.Reject.sort_key)))
  with tf.io.gfile.GFile(os.path.join(report_uri, names.INGESTION_SUMMARY_FILE), 'w') as f:
    f.write(json.dumps(summary, indent=2, sort_keys=True))


def _empty_split_error(counts: Dict[str, int], stage: str,
                       report_uri: str) -> EmptySplitError:
  empty = [split for split in names.SPLITS if not counts[split]]
  return EmptySplitError(
      f'Split(s) {", ".join(empty)} hold no image {stage} ({counts}); the pipeline needs '
      f'images in each of {names.SPLITS}. The images and caption lines that were rejected (if any), '
      f'with the reasons, and what each split kept: {os.path.join(report_uri, names.REJECTS_FILE)} and '
      f'{os.path.join(report_uri, names.INGESTION_SUMMARY_FILE)}')


def _check_exec_properties(exec_properties: Dict[str, Any]) -> None:
  file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY)
  if file_format != _OUTPUT_FILE_FORMAT:
    raise ValueError(f'output_file_format must be FORMAT_TFRECORDS_GZIP, got {file_format}')


class Executor(base_beam_executor.BaseBeamExecutor):
  """Reads the folder once and partitions it into splits and rejects."""

  def _work_dir(self) -> str:
    """A fresh folder for the records file and Beam's side outputs: under
    the execution's tmp dir when the orchestrator gives one (shared storage
    that remote Beam workers can read), else a local temporary folder."""
    try:
      work_dir = os.path.join(self._get_tmp_dir(), 'example_gen')
    except RuntimeError:  # run outside an orchestrator (tests, benchmarks)
      return tempfile.mkdtemp(prefix='example_gen_')
    tf.io.gfile.makedirs(work_dir)
    return work_dir

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    """Writes the examples and the reject report, then logs the totals.

    Args:
      input_dict: unused (the input is the folder `input_base`).
      output_dict: EXAMPLES_KEY: [Examples]; REJECTS_KEY: [IngestionReport].
      exec_properties: the component's parameters; input_base is the dataset
        folder, restval_split the split of Karpathy's restval.

    Raises:
      rules.LayoutError: input_base is not a dataset folder (raised before
        any Beam work starts).
      EmptySplitError: a split holds no image, after the text checks (before
        any image is read) or after the image checks; the report is written.
      RuntimeError: the counts do not reconcile (a bug, never bad input).
    """
    self._log_startup(input_dict, output_dict, exec_properties)
    _check_exec_properties(exec_properties)
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    report = artifact_utils.get_single_instance(output_dict[REJECTS_KEY])
    dataset = _read_dataset(exec_properties, report.uri)
    tally, image_rejects = self._write_examples(dataset, examples)
    _finish_report(report, dataset, tally, dataset.rejects + image_rejects)

  def _write_examples(self, dataset: rules.Dataset, examples: types.Artifact
                      ) -> Tuple[Dict[str, List[int]], List[rules.Reject]]:
    """Reads, checks and writes every image in Beam; returns ({split: [images, captions]
    written}, the images' rejects). The records go to Beam through files in a work folder,
    removed afterwards, so that neither they nor the images travel through the runner."""
    examples.split_names = artifact_utils.encode_split_names(list(names.SPLITS))
    split_uris = {split: artifact_utils.get_split_uri([examples], split)
                  for split in names.SPLITS}
    work_dir = self._work_dir()
    try:
      verify.write_records(dataset.records, work_dir)
      try:
        with self._make_beam_pipeline() as pipeline:
          verify.verify_and_write(pipeline, work_dir, split_uris, write_split.DEFAULT_FILE_NAME,
                                  len(dataset.records))
      finally:
        progress.release_tracker(work_dir)
      for split_uri in split_uris.values():
        verify.order_shards(split_uri)
      results = verify.read_results(work_dir)
    finally:
      tf.io.gfile.rmtree(work_dir)
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(examples, write_split.to_file_format_str(_OUTPUT_FILE_FORMAT))
    return results


def _read_dataset(exec_properties: Dict[str, Any], report_uri: str) -> rules.Dataset:
  """The text pass over the folder, in the driver process.

  A split left empty by the text checks fails here, with the report written,
  before any image is read: reading them all would not change the outcome.
  """
  dataset = layouts.read_dataset(
      exec_properties[standard_component_specs.INPUT_BASE_KEY],
      exec_properties.get(RESTVAL_SPLIT_KEY) or names.DEFAULT_RESTVAL_SPLIT)
  passed = collections.Counter(r.split for r in dataset.records)
  logging.info('Read %s-layout dataset %s: %d images pass the text checks %s.',
               dataset.layout.name, dataset.layout.root, len(dataset.records), dict(passed))
  if not all(passed[split] for split in names.SPLITS):
    empty_tally = {split: [0, 0] for split in names.SPLITS}
    _write_report(report_uri, dataset.rejects,
                  summarise(dataset, empty_tally, dataset.rejects, len(dataset.records)))
    raise _empty_split_error(passed, 'after the text checks', report_uri)
  return dataset


def _finish_report(report: types.Artifact, dataset: rules.Dataset, tally: Dict[str, List[int]],
                   rejects: List[rules.Reject]) -> None:
  """Writes the reject report and its totals, then fails if a count is lost or a split empty:
  every input record must be accounted for."""
  summary = summarise(dataset, tally, rejects)
  _write_report(report.uri, rejects, summary)
  images = summary['images']
  logging.info(
      'ImageCaptionExampleGen totals: %d input images = %d written %s + %d '
      'rejected %s; caption lines %s', images['input'],
      images['total_written'], images['written'], images['total_rejected'],
      images['rejected'], summary['caption_lines'])
  report.set_int_custom_property('input_images', images['input'])
  report.set_int_custom_property('written_images', images['total_written'])
  report.set_int_custom_property('rejected_images', images['total_rejected'])
  if not summary['reconciled']:
    raise RuntimeError(
        f'Ingestion counts of {summary["input_base"]} do not reconcile: '
        f'{json.dumps(summary)}')
  if not all(images['written'].values()):
    raise _empty_split_error(images['written'], 'after the image checks', report.uri)


class Driver(driver.FileBasedDriver):
  """FileBasedDriver whose input fingerprint also covers the image files.

  The default '*' pattern fingerprints only the folder's top-level entries,
  so replacing an image would not invalidate TFX's cache; '*/*' adds the
  files one level down (the image folders, Flickr8k_text/, annotations/).
  """

  def resolve_exec_properties(self, exec_properties, pipeline_info,
                              component_info):
    exec_properties = super().resolve_exec_properties(
        exec_properties, pipeline_info, component_info)
    nested = io_utils.generate_fingerprint(
        'nested',
        os.path.join(
            exec_properties[standard_component_specs.INPUT_BASE_KEY], '*',
            '*'))
    exec_properties[utils.FINGERPRINT_PROPERTY_NAME] += '\n' + nested
    return exec_properties


class ImageCaptionExampleGenSpec(types.ComponentSpec):
  """FileBasedExampleGen's parameters and restval_split, plus the reject report output.

  Not its output_config: there it names the output splits and the hash buckets
  that share one input among them, while here the dataset's own split files
  (or rules.hash_split) decide each image's split and the splits are always
  names.SPLITS, so a config could only repeat them or contradict them.
  """
  PARAMETERS = {
      **{key: parameter
         for key, parameter in standard_component_specs.FileBasedExampleGenSpec.PARAMETERS.items()
         if key != standard_component_specs.OUTPUT_CONFIG_KEY},
      RESTVAL_SPLIT_KEY: ExecutionParameter(type=str, optional=True)}
  INPUTS = {}
  OUTPUTS = {
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      REJECTS_KEY: ChannelParameter(type=IngestionReport),
  }


class ImageCaptionExampleGen(base_beam_component.BaseBeamComponent):
  """Ingests a captioning dataset folder; see the module docstring.

  Outputs: `examples` (Examples, splits train/eval/demo) and `rejects`
  (IngestionReport).
  """
  SPEC_CLASS = ImageCaptionExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
  DRIVER_CLASS = Driver

  def __init__(self, input_base: str,
               restval_split: str = names.DEFAULT_RESTVAL_SPLIT):
    """Args:
      input_base: the dataset folder.
      restval_split: the split Karpathy's 'restval' images go to.
    """
    if restval_split not in names.SPLITS:
      raise ValueError(f'restval_split must be one of {names.SPLITS}, '
                       f'got {restval_split!r}')
    spec = ImageCaptionExampleGenSpec(
        input_base=input_base,
        input_config=utils.make_default_input_config(),
        output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
        output_file_format=_OUTPUT_FILE_FORMAT,
        restval_split=restval_split,
        examples=types.Channel(type=standard_artifacts.Examples),
        rejects=types.Channel(type=IngestionReport))
    super().__init__(spec=spec)
