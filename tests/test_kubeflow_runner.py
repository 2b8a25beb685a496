"""Tests of the Kubeflow runner: compile the real pipeline and read the spec back.

The spec files are parsed into KFP's own protos (PipelineJob / PipelineSpec),
the YAML one exactly as kfp.Client reads it before uploading, so a spec that
a KFP backend would refuse to load fails here.
"""
import dataclasses
import json
import os
import re

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
import pytest
from tfx.orchestration.kubeflow.v2 import compiler_utils
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
from tfx import v1 as tfx
from tfx.utils import import_utils
import yaml

from components import names
from components import config as config_lib
from components.encoder import feature_gen
from components.evaluation import caption_evaluator
from components.evaluation import gallery
from components.ingestion import example_gen
from components.training import trainer_component
from pipeline import beam_args
from pipeline import kubeflow_runner
from pipeline import settings

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_IMAGE = 'europe-docker.pkg.dev/my-project/ml/captioner:test'
_ROOT = 'gs://bucket/captioner/root'
_DATA = 'gs://bucket/data/Flickr8k'
_SERVING = 'gs://bucket/captioner/serving'
_EXECUTOR_COMMAND = ['python', '-m',
                     'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor']
_BLESSING_RESOLVER = 'LatestBlessedModelResolver-model-blessing-resolver'
_MODEL_RESOLVER = 'LatestBlessedModelResolver-model-resolver'
# Every task of the compiled DAG and the tasks it waits for. The Resolver node
# compiles into two KFP resolver tasks (latest blessing, then its model).
_DEPENDENCIES = {
    names.EXAMPLE_GEN: set(),
    names.STATISTICS_GEN: {names.EXAMPLE_GEN},
    names.SCHEMA_GEN: set(),
    names.EXAMPLE_VALIDATOR: {names.STATISTICS_GEN, names.SCHEMA_GEN},
    names.TRANSFORM: {names.EXAMPLE_GEN, names.SCHEMA_GEN},
    names.FEATURE_GEN: {names.EXAMPLE_GEN},
    names.CAPTION_TRAINER: {names.TRANSFORM, names.SCHEMA_GEN, names.FEATURE_GEN},
    names.BASELINE_TRAINER: {names.TRANSFORM, names.SCHEMA_GEN},
    _BLESSING_RESOLVER: set(),
    _MODEL_RESOLVER: set(),  # reads the blessing resolver's output, see below
    names.CAPTION_EVALUATOR: {names.EXAMPLE_GEN, names.CAPTION_TRAINER, names.BASELINE_TRAINER,
                         _MODEL_RESOLVER, names.FEATURE_GEN},
    names.PUSHER: {names.CAPTION_EVALUATOR, names.CAPTION_TRAINER},
    names.DEMO_GALLERY: {names.EXAMPLE_GEN, names.PUSHER, names.CAPTION_TRAINER, names.BASELINE_TRAINER,
                    names.CAPTION_EVALUATOR, names.FEATURE_GEN},
}
_RESOLVERS = {_BLESSING_RESOLVER, _MODEL_RESOLVER}
_CONTAINER_TASKS = set(_DEPENDENCIES) - _RESOLVERS
# The executor class each container task's pod must run.
_EXECUTORS = {
    names.EXAMPLE_GEN: example_gen.Executor,
    names.STATISTICS_GEN: tfx.components.StatisticsGen.EXECUTOR_SPEC.executor_class,
    names.SCHEMA_GEN: tfx.components.ImportSchemaGen.EXECUTOR_SPEC.executor_class,
    names.EXAMPLE_VALIDATOR: tfx.components.ExampleValidator.EXECUTOR_SPEC.executor_class,
    names.TRANSFORM: tfx.components.Transform.EXECUTOR_SPEC.executor_class,
    names.FEATURE_GEN: feature_gen.ImageFeatureGen.EXECUTOR_SPEC.executor_class,
    # TFX's run_fn executor, with the ImageFeatures input handed to run_fn.
    names.CAPTION_TRAINER: trainer_component.Executor,
    names.BASELINE_TRAINER: trainer_component.Executor,
    names.CAPTION_EVALUATOR: caption_evaluator.CaptionEvaluator.EXECUTOR_SPEC.executor_class,
    names.PUSHER: tfx.components.Pusher.EXECUTOR_SPEC.executor_class,
    names.DEMO_GALLERY: gallery.DemoGallery.EXECUTOR_SPEC.executor_class,
}
_PATHS = ['--image', _IMAGE, '--pipeline_root', _ROOT, '--data_root', _DATA,
          '--serving_dir', _SERVING]


def _compile(tmp_path_factory, name, *flags):
  output = str(tmp_path_factory.mktemp('spec') / name)
  assert kubeflow_runner.main(['compile', '--output', output, *_PATHS, *flags]) == 0
  return output


@pytest.fixture(scope='module')
def dataflow_job(tmp_path_factory):
  """PipelineJob JSON for Vertex AI (with the resolver), Beam on Dataflow, 1 GPU per Trainer."""
  path = _compile(tmp_path_factory, 'captioner.json', '--target', 'vertex', '--beam_runner', 'dataflow',
                  '--gcp_project', 'my-project', '--gcp_region', 'europe-west1',
                  '--dataflow_max_workers', '8', '--epochs', '7', '--restval_split', 'eval',
                  '--learning_rate', '3e-4', '--dropout', '0.4', '--embedding_dim', '256',
                  '--min_word_frequency', '3', '--scst_epochs', '2', '--decoder_precision', 'float32')
  with open(path) as f:
    return json_format.Parse(f.read(), pipeline_spec_pb2.PipelineJob())


@pytest.fixture(scope='module')
def dataflow_spec(dataflow_job):
  return json_format.ParseDict(json_format.MessageToDict(dataflow_job.pipeline_spec),
                               pipeline_spec_pb2.PipelineSpec())


@pytest.fixture(scope='module')
def flink_spec(tmp_path_factory):
  """PipelineSpec YAML for open-source KFP (what kfp.Client uploads): Beam on Flink, 2 GPUs + 32 GB."""
  path = _compile(tmp_path_factory, 'captioner.yaml', '--beam_runner', 'flink',
                  '--flink_master', 'flink-jobmanager:8081', '--flink_version', '1.18',
                  '--gpu_count', '2', '--trainer_memory_limit', '32',
                  '--beam_arg=--max_parallelism=16')
  # As kfp.client.client._extract_pipeline_yaml reads a package.
  with open(path) as f:
    return json_format.ParseDict(yaml.safe_load(f), pipeline_spec_pb2.PipelineSpec())


def _tasks(spec):
  return spec.root.dag.tasks


def _container(spec, task_name):
  executor_label = spec.components[_tasks(spec)[task_name].component_ref.name].executor_label
  executor = spec.deployment_spec.fields['executors'].struct_value.fields[executor_label]
  return json_format.MessageToDict(executor.struct_value)['container']


def _parameter(spec, task_name, key):
  return _tasks(spec)[task_name].inputs.parameters[key].runtime_value.constant.string_value


def _producer(spec, task_name, input_key):
  source = _tasks(spec)[task_name].inputs.artifacts[input_key].task_output_artifact
  return source.producer_task, source.output_artifact_key


def test_every_component_is_a_task_with_its_dependencies(dataflow_spec):
  tasks = _tasks(dataflow_spec)
  assert set(tasks) == set(_DEPENDENCIES)
  assert {name: set(task.dependent_tasks) for name, task in tasks.items()} == _DEPENDENCIES
  assert dataflow_spec.schema_version == '2.1.0'  # the schema KFP 2 backends accept


def test_open_source_kfp_gets_no_resolver_tasks(flink_spec):
  # KFP's backend rejects TFX resolver tasks; the evaluator then gates on thresholds only.
  assert set(_tasks(flink_spec)) == _CONTAINER_TASKS
  assert 'last_blessed_model' not in _tasks(flink_spec)[names.CAPTION_EVALUATOR].inputs.artifacts


def test_artifacts_flow_from_the_right_producers(dataflow_spec):
  # The baseline must never be what is evaluated as the captioner or pushed.
  assert _producer(dataflow_spec, names.CAPTION_EVALUATOR, 'model') == (names.CAPTION_TRAINER, 'model')
  assert _producer(dataflow_spec, names.CAPTION_EVALUATOR, 'baseline_model') == (
      names.BASELINE_TRAINER, 'model')
  assert _producer(dataflow_spec, names.CAPTION_EVALUATOR, 'last_blessed_model') == (
      _MODEL_RESOLVER, 'model')
  assert _producer(dataflow_spec, _MODEL_RESOLVER, 'input') == (
      _BLESSING_RESOLVER, 'model_blessing')
  assert _producer(dataflow_spec, names.PUSHER, 'model') == (names.CAPTION_TRAINER, 'model')
  assert _producer(dataflow_spec, names.PUSHER, 'model_blessing') == (names.CAPTION_EVALUATOR, 'blessing')
  assert _producer(dataflow_spec, names.TRANSFORM, 'examples') == (names.EXAMPLE_GEN, 'examples')
  for trainer in names.TRAINERS:
    assert _producer(dataflow_spec, trainer, 'examples') == (names.TRANSFORM, 'transformed_examples')


def test_paths_and_configs_reach_the_components(dataflow_job, dataflow_spec):
  assert dataflow_job.runtime_config.gcs_output_directory == _ROOT
  assert _parameter(dataflow_spec, names.EXAMPLE_GEN, 'input_base') == _DATA
  assert _parameter(dataflow_spec, names.EXAMPLE_GEN, 'restval_split') == 'eval'
  assert _parameter(dataflow_spec, names.SCHEMA_GEN, 'schema_file') == (
      kubeflow_runner.IMAGE_SCHEMA_PATH)
  push = json.loads(_parameter(dataflow_spec, names.PUSHER, 'push_destination'))
  assert push['filesystem']['base_directory'] == f'{_SERVING}/{names.MODEL_NAME}'
  # One configuration source: the same dataclasses the local runner builds.
  captioner = json.loads(_parameter(dataflow_spec, names.CAPTION_TRAINER, 'custom_config'))
  baseline = json.loads(_parameter(dataflow_spec, names.BASELINE_TRAINER, 'custom_config'))
  expected = config_lib.TrainerConfig(epochs=7, learning_rate=3e-4, dropout=0.4, embedding_dim=256,
                                      scst_epochs=2, decoder_precision='float32')
  assert config_lib.from_custom_config(config_lib.TrainerConfig, captioner) == expected
  assert config_lib.from_custom_config(config_lib.TrainerConfig, baseline) == (
      settings.baseline_config(expected, config_lib.EncoderConfig()))
  assert baseline['use_image'] is False
  assert baseline['scst_epochs'] == 0  # the self-critical stage needs the image features
  thresholds = _parameter(dataflow_spec, names.CAPTION_EVALUATOR, 'thresholds')
  assert config_lib.from_json(config_lib.EvaluationConfig, thresholds) == config_lib.EvaluationConfig()
  transform = json.loads(_parameter(dataflow_spec, names.TRANSFORM, 'custom_config'))
  assert config_lib.from_custom_config(config_lib.TransformConfig, transform) == (
      config_lib.TransformConfig(min_word_frequency=3))


def test_no_hardware_choice_is_made_on_the_compiling_machine(dataflow_spec, flink_spec):
  """The spec is compiled on one machine and run on others: 'auto' precisions reach the
  workers unresolved, whatever the compiling machine's processor."""
  for spec in (dataflow_spec, flink_spec):
    encoder = config_lib.from_json(config_lib.EncoderConfig, _parameter(spec, names.FEATURE_GEN, 'encoder'))
    assert encoder.precision == config_lib.AUTO_PRECISION
    assert encoder.image_size is None  # the backbone's own, decided with it
    for name in _CONTAINER_TASKS:
      for key, value in _tasks(spec)[name].inputs.parameters.items():
        text = value.runtime_value.constant.string_value
        assert 'bfloat16' not in text and 'float32' not in text.replace('"decoder_precision": "float32"', ''), (
            name, key, text)


def test_every_container_runs_the_pipeline_image(dataflow_spec):
  for name in _CONTAINER_TASKS:
    container = _container(dataflow_spec, name)
    assert container['image'] == _IMAGE, name
    assert container['command'] == _EXECUTOR_COMMAND, name


def test_the_pod_entrypoint_loads_every_executor_and_artifact_type(dataflow_spec):
  # What TFX's kubeflow_v2_run_executor does first in each pod: import the
  # executor class, and rebuild the TFX artifacts from their spec types (a
  # custom type's schema title must be its import path).
  for name in _CONTAINER_TASKS:
    args = _container(dataflow_spec, name)['args']
    executor = import_utils.import_class_by_path(args[args.index('--executor_class_path') + 1])
    assert executor is _EXECUTORS[name], name
  for component_name, component in dataflow_spec.components.items():
    for definitions in (component.input_definitions.artifacts,
                        component.output_definitions.artifacts):
      for key, definition in definitions.items():
        title = yaml.safe_load(definition.artifact_type.instance_schema)['title']
        runtime = pipeline_spec_pb2.RuntimeArtifact(
            name=f'artifacts/{component_name}/{key}', uri=f'{_ROOT}/{key}',
            type=definition.artifact_type)
        [artifact] = kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(
            {key: pipeline_spec_pb2.ArtifactList(artifacts=[runtime])})[key]
        standard = title in compiler_utils.TITLE_TO_CLASS_PATH
        assert artifact.type_name == (title[len('tfx.'):] if standard else title), (
            component_name, key)


def test_gpu_is_requested_for_the_trainers_only(dataflow_spec, flink_spec):
  for name in names.TRAINERS:
    assert _container(dataflow_spec, name)['resources'] == {
        'accelerator': {'type': 'nvidia.com/gpu', 'count': '1'}}
    assert _container(flink_spec, name)['resources'] == {
        'accelerator': {'type': 'nvidia.com/gpu', 'count': '2'}, 'memoryLimit': 32.0}
  for name in _CONTAINER_TASKS - set(names.TRAINERS):
    assert 'resources' not in _container(dataflow_spec, name), name


def test_the_feature_pass_gets_the_gpu_when_beam_runs_in_its_pod(tmp_path_factory):
  path = _compile(tmp_path_factory, 'direct_gpu.yml', '--gpu_count', '1')
  with open(path) as f:
    spec = json_format.ParseDict(yaml.safe_load(f), pipeline_spec_pb2.PipelineSpec())
  for name in names.TRAINERS + (names.FEATURE_GEN,):
    assert _container(spec, name)['resources'] == {'accelerator': {'type': 'nvidia.com/gpu', 'count': '1'}}
  assert 'resources' not in _container(spec, names.TRANSFORM)


def test_dataflow_beam_args(dataflow_spec):
  expected = ['--runner=DataflowRunner', '--project=my-project', '--region=europe-west1',
              f'--temp_location={_ROOT}/tmp/dataflow', f'--sdk_container_image={_IMAGE}',
              '--sdk_location=container', '--max_num_workers=8']
  for name in _CONTAINER_TASKS:
    assert _container(dataflow_spec, name)['args'][-len(expected):] == expected, name


def test_flink_beam_args_and_yaml_pipeline_root(flink_spec):
  assert flink_spec.default_pipeline_root == _ROOT
  expected = ['--runner=FlinkRunner', '--flink_master=flink-jobmanager:8081',
              '--flink_submit_uber_jar', '--environment_type=EXTERNAL',
              f'--environment_config={beam_args.DEFAULT_FLINK_WORKER_POOL}',
              '--flink_version=1.18', '--max_parallelism=16']
  for name in (names.EXAMPLE_GEN, names.STATISTICS_GEN, names.TRANSFORM, names.CAPTION_EVALUATOR):
    assert _container(flink_spec, name)['args'][-len(expected):] == expected, name


def test_direct_runner_on_cpu(tmp_path_factory):
  path = _compile(tmp_path_factory, 'cpu.yml', '--gpu_count', '0', '--beam_workers', '4')
  # (No GPU: no resources on the feature pass either.)
  with open(path) as f:
    spec = json_format.ParseDict(yaml.safe_load(f), pipeline_spec_pb2.PipelineSpec())
  for name in names.TRAINERS:
    assert 'resources' not in _container(spec, name)
  direct = beam_args.direct_beam_args(4)
  assert _container(spec, names.TRANSFORM)['args'][-len(direct):] == direct
  threads = beam_args.direct_thread_beam_args(4)
  assert _container(spec, names.EXAMPLE_GEN)['args'][-len(threads):] == threads
  in_process = beam_args.direct_in_process_beam_args()
  assert _container(spec, names.FEATURE_GEN)['args'][-len(in_process):] == in_process


@pytest.mark.parametrize('flags, message', [
    (['--pipeline_root', '/tmp/root'], 'not an object-storage URI'),
    (['--beam_runner', 'dataflow', '--gcp_region', 'europe-west1'], '--gcp_project'),
    (['--beam_runner', 'flink'], '--flink_master'),
    (['--pipeline_root', 's3://bucket/root', '--beam_runner', 'dataflow', '--gcp_project', 'p',
      '--gcp_region', 'r'], 'gs:// temp location'),
    (['--gpu_count', '-1'], 'negative'),
])
def test_compile_refuses_unusable_settings(tmp_path, capsys, flags, message):
  output = str(tmp_path / 'spec.yaml')
  with pytest.raises(SystemExit):
    kubeflow_runner.main(['compile', '--output', output, *_PATHS, *flags])
  assert message in capsys.readouterr().err
  assert not os.path.exists(output)


def test_submit_needs_the_yaml_form(tmp_path):
  with pytest.raises(ValueError, match='compile with --output <name>.yaml'):
    kubeflow_runner.main(['submit', '--package', str(tmp_path / 'captioner.json'),
                          '--host', 'http://localhost:1'])


def _pin(package):
  with open(os.path.join(_REPO, 'requirements', 'constraints.txt')) as f:
    return re.search(rf'^{re.escape(package)}==(\S+)$', f.read(), re.MULTILINE).group(1)


def test_dockerfile_matches_the_pins_and_the_runner():
  with open(os.path.join(_REPO, 'Dockerfile')) as f:
    dockerfile = f.read()
  assert re.search(r'^ARG TFX_VERSION=(\S+)$', dockerfile, re.MULTILINE).group(1) == _pin('tfx')
  assert re.search(r'^ARG BEAM_VERSION=(\S+)$', dockerfile, re.MULTILINE).group(1) == (
      _pin('apache-beam'))
  assert 'FROM gcr.io/tfx-oss-public/tfx:${TFX_VERSION}' in dockerfile
  assert re.search(r'^WORKDIR (\S+)$', dockerfile, re.MULTILINE).group(1) == (
      kubeflow_runner.IMAGE_WORKDIR)
  assert os.path.isfile(os.path.join(_REPO, names.SCHEMA_RELATIVE_PATH))
  with open(os.path.join(_REPO, '.dockerignore')) as f:
    ignored = f.read().split()
  assert {'.venv', '.git', 'outputs', 'data'} <= set(ignored)


def test_the_attention_decoder_compiles_with_its_grid(tmp_path_factory):
  """--decoder attention: the captioner trains attention on the grid, the feature pass keeps the
  grid, the baseline stays the Show-and-Tell language model."""
  path = _compile(tmp_path_factory, 'attention.yaml', '--decoder', 'attention', '--epochs', '3')
  with open(path) as f:
    spec = json_format.ParseDict(yaml.safe_load(f), pipeline_spec_pb2.PipelineSpec())
  captioner = config_lib.from_custom_config(
      config_lib.TrainerConfig, json.loads(_parameter(spec, names.CAPTION_TRAINER, 'custom_config')))
  assert captioner == dataclasses.replace(config_lib.ATTENTION_TRAINER, epochs=3)
  baseline = json.loads(_parameter(spec, names.BASELINE_TRAINER, 'custom_config'))
  assert (baseline['decoder'], baseline['use_image']) == ('show_and_tell', False)
  encoder = config_lib.from_json(config_lib.EncoderConfig, _parameter(spec, names.FEATURE_GEN, 'encoder'))
  assert encoder == config_lib.ATTENTION_ENCODER
