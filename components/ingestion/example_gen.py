"""Flickr8kExampleGen: a Flickr8k-style folder in, validated tf.Examples out.

Data contract
-------------
Input (`input_base`): a dataset folder in the official Flickr8k or the Kaggle
layout; see components/ingestion/flickr8k.py for the layouts and for every validation
and repair rule. A folder in neither layout fails the component at once.

Output `examples` (standard Examples artifact): gzipped TFRecord shards
`Split-<split>/data_tfrecord-*.gz` for the splits features.TRAIN_SPLIT,
features.EVAL_SPLIT and features.DEMO_SPLIT (Flickr8k's train, dev and test
files), one serialized tf.train.Example per image:
  features.IMAGE_ID_KEY  bytes [1]              image file name (the id)
  features.IMAGE_KEY     bytes [1]              the image file, byte for byte
  features.CAPTIONS_KEY  bytes [num_captions]   its valid captions, UTF-8
Every written image decodes with tf.io.decode_image(channels=3) and has at
least one caption.

Output `rejects` (IngestionReport artifact):
  rejects.jsonl  one JSON object per rejected image or caption line, sorted:
                 {"level": "image"|"caption", "id", "file", "line",
                  "reason", "detail"}
  summary.json   counts per split, per reject reason and per repair, with
                 totals that reconcile (see `summarise`); also logged and
                 copied to the artifact's custom properties.

Why a custom executor: the stock ExampleGen reads its input once per split
pattern, while Flickr8k's splits are defined by text files that must be
cross-checked (an id in two splits, in none, ...). Here the text files are
read once, in the driver process, and the image files, the expensive part, are
read, verified and converted in parallel by one Beam pipeline that fans out
into the three splits and the rejects.
"""

import json
import os
import re
from typing import Any, Dict, Iterable, Iterator, List, Tuple, Union

from absl import logging
import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import base_example_gen_executor
from tfx.components.example_gen import driver
from tfx.components.example_gen import utils
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import io_utils
from tfx.utils import proto_utils

from components import features
from components import names
from components import records
from components.ingestion import flickr8k
from components.artifacts import IngestionReport

EXAMPLES_KEY = standard_component_specs.EXAMPLES_KEY
REJECTS_KEY = 'rejects'

# exec_properties key under which Do hands the report folder to the pipeline.
_REPORT_URI_KEY = '_report_uri'
_REJECTED_TAG = 'rejected'
_TALLY_TAG = 'tally'
# TF error messages carry op boilerplate: '{{function_node ...}} <message>
# [Op:DecodeImage]'; the report keeps <message>.
_OP_BOILERPLATE = re.compile(r'^\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]$')


def _output_config() -> example_gen_pb2.Output:
  """Names the output splits. Membership comes from the dataset's split
  files (or id hash), not from these hash buckets, which only mirror
  Flickr8k's 6000:1000:1000 proportion."""
  buckets = dict(flickr8k.HASH_SPLIT_BUCKETS)
  return example_gen_pb2.Output(
      split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(
              name=split, hash_buckets=buckets[split] // 1000)
          for split in features.SPLITS
      ]))


def executor_exec_properties(input_base: str) -> Dict[str, Any]:
  """exec_properties as the orchestrator hands them to `Executor.Do`.

  For callers that run the executor without a pipeline (tests, benchmarks).
  """
  return {
      standard_component_specs.INPUT_BASE_KEY: input_base,
      standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(
          utils.make_default_input_config()),
      standard_component_specs.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(
          _output_config()),
      standard_component_specs.OUTPUT_DATA_FORMAT_KEY:
          example_gen_pb2.FORMAT_TF_EXAMPLE,
      standard_component_specs.OUTPUT_FILE_FORMAT_KEY:
          example_gen_pb2.FORMAT_TFRECORDS_GZIP,
  }


def _to_example(record: flickr8k.ImageRecord, image: bytes) -> bytes:
  return records.image_example(image, record.image_id, record.captions).SerializeToString()


class _ReadAndVerifyImage(beam.DoFn):
  """ImageRecord -> serialized tf.Example in its split's output, or a Reject.

  Also emits (split, num_captions) to the tally output for the summary.
  """

  def process(
      self, record: flickr8k.ImageRecord
  ) -> Iterator[Union[bytes, beam.pvalue.TaggedOutput]]:
    def reject(reason: str, error: tf.errors.OpError):
      lines = (error.message or '').strip().splitlines()
      detail = _OP_BOILERPLATE.sub('', lines[0]) if lines else ''
      return beam.pvalue.TaggedOutput(
          _REJECTED_TAG,
          flickr8k.Reject(flickr8k.IMAGE_LEVEL, record.image_id, record.file,
                          0, reason, detail, len(record.captions)))

    try:
      with tf.io.gfile.GFile(record.path, 'rb') as f:
        image = f.read()
    except tf.errors.OpError as error:
      yield reject(flickr8k.UNREADABLE_IMAGE, error)
      return
    try:
      tf.io.decode_image(image, channels=3, expand_animations=False)
    except tf.errors.OpError as error:
      yield reject(flickr8k.NOT_AN_IMAGE, error)
      return
    yield beam.pvalue.TaggedOutput(record.split, _to_example(record, image))
    yield beam.pvalue.TaggedOutput(_TALLY_TAG,
                                   (record.split, len(record.captions)))


def _text_pass_counts(dataset: flickr8k.Dataset) -> Dict[str, Any]:
  """What `summarise` needs from the text pass (small, cheap to pickle)."""
  return {
      'input_base': dataset.layout.root,
      'layout': dataset.layout.name,
      'input_images': dataset.num_input_ids,
      'input_caption_lines': dataset.num_caption_lines,
      'repairs': dict(dataset.repairs),
  }


def summarise(text_pass: Dict[str, Any],
              tally: Iterable[Union[Tuple[str, int], flickr8k.Reject]]
             ) -> Dict[str, Any]:
  """Builds summary.json from the text pass counts and the Beam tally.

  `text_pass` comes from `_text_pass_counts`; `tally` holds
  (split, num_captions) per written image and every Reject.
  Reconciliation, both must hold for 'reconciled' to be true:
    images.input == images.total_written + images.total_rejected
    caption_lines.input == caption_lines.written + sum(repaired)
        + sum(caption_lines.rejected) + dropped_with_rejected_image
  """
  written = {split: 0 for split in features.SPLITS}
  captions_written = 0
  image_reasons, caption_reasons = [], []
  dropped_with_image = 0
  for item in tally:
    if isinstance(item, flickr8k.Reject):
      if item.level == flickr8k.IMAGE_LEVEL:
        image_reasons.append(item.reason)
        dropped_with_image += item.num_captions
      else:
        caption_reasons.append(item.reason)
    else:
      split, num_captions = item
      written[split] += 1
      captions_written += num_captions
  repairs = text_pass['repairs']
  images = {
      'input': text_pass['input_images'],
      'written': written,
      'rejected': flickr8k.count_by(image_reasons),
      'total_written': sum(written.values()),
      'total_rejected': len(image_reasons),
  }
  caption_lines = {
      'input': text_pass['input_caption_lines'],
      'written': captions_written,
      'repaired': repairs,
      'rejected': flickr8k.count_by(caption_reasons),
      'dropped_with_rejected_image': dropped_with_image,
  }
  reconciled = (
      images['input'] == images['total_written'] + images['total_rejected']
      and caption_lines['input'] == (
          captions_written + sum(repairs.values()) +
          len(caption_reasons) + dropped_with_image))
  return {
      'input_base': text_pass['input_base'],
      'layout': text_pass['layout'],
      'images': images,
      'caption_lines': caption_lines,
      'reconciled': reconciled,
  }


def _reject_sort_key(reject: flickr8k.Reject) -> Tuple[str, str, int, str]:
  return (reject.level, reject.file, reject.line, reject.image_id)


def _write_report(tally: List[Any], report_uri: str,
                  text_pass: Dict[str, Any]) -> None:
  """Writes rejects.jsonl and summary.json from the whole tally.

  The report is small (one line per reject), so it is written from a single
  element rather than through sharded sinks, which would add a dozen Beam
  stages and seconds of fixed cost on the multi-processing DirectRunner.
  Rewriting it on a retry produces the same bytes.
  """
  rejects = sorted((r for r in tally if isinstance(r, flickr8k.Reject)),
                   key=_reject_sort_key)
  with tf.io.gfile.GFile(os.path.join(report_uri, names.REJECTS_FILE), 'w') as f:
    f.write(''.join(json.dumps(r.to_json_dict(), sort_keys=True) + '\n'
                    for r in rejects))
  with tf.io.gfile.GFile(os.path.join(report_uri, names.INGESTION_SUMMARY_FILE), 'w') as f:
    f.write(json.dumps(summarise(text_pass, tally), indent=2, sort_keys=True))


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
  """Reads the folder once and partitions it into splits and rejects."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    """Unused: the per-split-pattern read does not fit Flickr8k's split
    files, so GenerateExamplesByBeam is overridden instead."""
    raise NotImplementedError(
        'Flickr8kExampleGen reads its folder in GenerateExamplesByBeam.')

  def GenerateExamplesByBeam(
      self, pipeline: beam.Pipeline,
      exec_properties: Dict[str, Any]) -> Dict[str, beam.pvalue.PCollection]:
    """Returns {split: serialized tf.Examples}; writes the reject report.

    Raises:
      flickr8k.LayoutError: input_base is not a Flickr8k folder (raised
        before any Beam work starts).
      ValueError: output_config names splits other than features.SPLITS.
    """
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(
        exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
        output_config)
    split_names = [s.name for s in output_config.split_config.splits]
    if sorted(split_names) != sorted(features.SPLITS):
      raise ValueError(f'output_config must name the splits {features.SPLITS},'
                       f' got {split_names}')
    dataset = flickr8k.read_dataset(
        exec_properties[standard_component_specs.INPUT_BASE_KEY])
    logging.info('Read %s-layout dataset %s: %d images pass the text checks.',
                 dataset.layout.name, dataset.layout.root, len(dataset.records))
    report_uri = exec_properties[_REPORT_URI_KEY]

    outputs = (
        pipeline
        | 'CreateRecords' >> beam.Create(dataset.records)
        | 'ReadAndVerifyImages' >> beam.ParDo(
            _ReadAndVerifyImage()).with_outputs(
                _REJECTED_TAG, _TALLY_TAG, *features.SPLITS))
    _ = (
        (pipeline | 'CreateTextRejects' >> beam.Create(dataset.rejects),
         outputs[_REJECTED_TAG], outputs[_TALLY_TAG])
        | 'FlattenTally' >> beam.Flatten()
        | 'CollectTally' >> beam.combiners.ToList()
        | 'WriteReport' >> beam.Map(_write_report, report_uri,
                                    _text_pass_counts(dataset)))
    return {split: outputs[split] for split in features.SPLITS}

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    """Writes the examples and the reject report, then logs the totals.

    Raises:
      RuntimeError: the counts do not reconcile (a bug, never bad input).
    """
    report = artifact_utils.get_single_instance(output_dict[REJECTS_KEY])
    tf.io.gfile.makedirs(report.uri)
    exec_properties = dict(exec_properties, **{_REPORT_URI_KEY: report.uri})
    super().Do(input_dict, output_dict, exec_properties)

    summary = json.loads(
        io_utils.read_string_file(os.path.join(report.uri, names.INGESTION_SUMMARY_FILE)))
    images = summary['images']
    logging.info(
        'Flickr8kExampleGen totals: %d input images = %d written %s + %d '
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


class Driver(driver.FileBasedDriver):
  """FileBasedDriver whose input fingerprint also covers the image files.

  The default '*' pattern fingerprints only the folder's top-level entries,
  so replacing an image would not invalidate TFX's cache; '*/*' adds the
  files one level down (the image folder, Flickr8k_text/).
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


class Flickr8kExampleGenSpec(types.ComponentSpec):
  """FileBasedExampleGen's parameters, plus the reject report output."""
  PARAMETERS = dict(standard_component_specs.FileBasedExampleGenSpec.PARAMETERS)
  INPUTS = {}
  OUTPUTS = {
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      REJECTS_KEY: ChannelParameter(type=IngestionReport),
  }


class Flickr8kExampleGen(base_beam_component.BaseBeamComponent):
  """Ingests a Flickr8k(-style) folder; see the module docstring.

  Outputs: `examples` (Examples, splits train/eval/demo) and `rejects`
  (IngestionReport).
  """
  SPEC_CLASS = Flickr8kExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
  DRIVER_CLASS = Driver

  def __init__(self, input_base: str):
    """Args: input_base: the dataset folder."""
    spec = Flickr8kExampleGenSpec(
        input_base=input_base,
        input_config=utils.make_default_input_config(),
        output_config=_output_config(),
        output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
        output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        examples=types.Channel(type=standard_artifacts.Examples),
        rejects=types.Channel(type=IngestionReport))
    super().__init__(spec=spec)
