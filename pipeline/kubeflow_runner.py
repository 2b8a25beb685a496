"""Compiles the captioner pipeline for Kubeflow Pipelines and submits it.

The same `create_pipeline(...)` the local runner runs is compiled by TFX's
KubeflowV2DagRunner into a KFP v2 pipeline spec. Against a local run only what
must differ differs: paths are object-storage URIs, Beam runs on Dataflow,
Flink or in-pod, the two Trainers ask for a GPU, and Kubeflow brings its own
ML Metadata store. Every component runs in the pipeline image (see the
Dockerfile), which holds this project at IMAGE_WORKDIR.

  # spec for Kubeflow Pipelines (YAML: what kfp.Client uploads)
  python -m pipeline.kubeflow_runner compile --output captioner.yaml \\
      --image europe-docker.pkg.dev/my-project/ml/captioner:0.1.0 \\
      --pipeline_root gs://my-bucket/captioner/root \\
      --data_root gs://my-bucket/data/Flickr8k \\
      --serving_dir gs://my-bucket/captioner/serving \\
      --beam_runner dataflow --gcp_project my-project --gcp_region europe-west1
  # run it
  python -m pipeline.kubeflow_runner submit --package captioner.yaml \\
      --host https://kfp.example.com/pipeline

An --output ending in .json gets the PipelineJob form instead (the spec plus
its runtime config), the template format of Vertex AI Pipelines.
"""
import argparse
import json
import logging
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from apache_beam.options import pipeline_options as beam_options
import kfp
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
import yaml

from components import names
from components import config as config_lib
from components.encoder import feature_gen
from pipeline import beam_args
from pipeline import pipeline as pipeline_lib
from pipeline import settings

# The pipeline image's working directory (Dockerfile WORKDIR), holding the
# project source; the components read the schema from there.
IMAGE_WORKDIR = '/pipeline'
IMAGE_SCHEMA_PATH = f'{IMAGE_WORKDIR}/{names.SCHEMA_RELATIVE_PATH}'
# Kubernetes' extended resource name of NVIDIA GPUs, which open-source KFP puts
# in the pod's limits. Vertex AI wants its machine names (NVIDIA_TESLA_T4, ...).
DEFAULT_GPU_TYPE = 'nvidia.com/gpu'
# Object stores TensorFlow and Beam address by URI (s3:// needs extra packages
# in the image, see docs/kubeflow.md); pods share no local disk.
_OBJECT_STORE_SCHEMES = ('gs://', 's3://')
_YAML_SUFFIXES = ('.yaml', '.yml')

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def trainer_resources(gpu_type: str, gpu_count: int, cpu_limit: Optional[float] = None,
                      memory_limit_gb: Optional[float] = None) -> Optional[ResourceSpec]:
  """The Trainers' container resources; None when nothing is requested."""
  spec = ResourceSpec()
  if gpu_count:
    spec.accelerator.type = gpu_type
    spec.accelerator.count = gpu_count
  if cpu_limit:
    spec.cpu_limit = cpu_limit
  if memory_limit_gb:
    spec.memory_limit = memory_limit_gb
  return spec if spec.ByteSize() else None


def gpu_node_ids(beam_runner: str) -> Tuple[str, ...]:
  """The nodes that get the Trainers' resources under `beam_runner`: with Beam in
  its own pod (direct) the feature pass runs the backbone there and gets the GPU
  too; on Dataflow or Flink the backbone runs on that runner's workers instead."""
  return names.TRAINERS + (names.FEATURE_GEN,) if beam_runner == 'direct' else names.TRAINERS


def build_pipeline(args: argparse.Namespace) -> tfx.dsl.Pipeline:
  """The pipeline of the parsed `compile` flags, resources attached."""
  encoder_defaults, trainer_defaults = config_lib.decoder_defaults(args.decoder)
  encoder_config = settings.encoder_config(args, encoder_defaults)
  trainer_config = settings.trainer_config(args, trainer_defaults)
  resources = trainer_resources(args.gpu_type, args.gpu_count, args.trainer_cpu_limit,
                                args.trainer_memory_limit)
  return pipeline_lib.create_pipeline(
      pipeline_name=args.pipeline_name,
      pipeline_root=args.pipeline_root,
      data_root=args.data_root,
      schema_path=args.schema_path,
      serving_model_dir=f'{args.serving_dir}/{args.model_name}',
      transform_config=settings.transform_config(args, config_lib.TransformConfig()),
      encoder_config=encoder_config,
      trainer_config=trainer_config,
      baseline_config=settings.baseline_config(trainer_config, encoder_config),
      evaluation_config=settings.evaluation_config(args, config_lib.EvaluationConfig()),
      metadata_connection_config=None,
      beam_pipeline_args=_beam_args(args),
      node_beam_pipeline_args=(beam_args.direct_node_beam_args(args.beam_workers)
                               if args.beam_runner == 'direct' else None),
      enable_cache=not args.no_cache,
      restval_split=args.restval_split,
      backbone_weights_sha256=feature_gen.weights_file_digest(encoder_config.backbone_weights),
      # Open-source KFP rejects TFX resolver tasks; Vertex AI Pipelines runs them.
      resolve_last_blessed_model=args.target == 'vertex',
      node_platform_configs=({node_id: resources for node_id in gpu_node_ids(args.beam_runner)}
                             if resources is not None else None))


def compile_pipeline(pipeline: tfx.dsl.Pipeline, image: str, output_path: str) -> Dict[str, Any]:
  """Compiles `pipeline` with every component in `image`; writes and returns it.

  The spec uses schema 2.1.0, the one KFP 2 backends accept. A .yaml/.yml
  output holds the PipelineSpec alone, with the pipeline root as its
  defaultPipelineRoot (kfp.Client uploads this form); a .json output holds
  the PipelineJob (spec + runtimeConfig.gcsOutputDirectory), as Vertex AI
  Pipelines takes it.
  """
  if not output_path.endswith(_YAML_SUFFIXES + ('.json',)):
    raise ValueError(f'--output {output_path}: name a .yaml/.yml (Kubeflow Pipelines) '
                     'or .json (Vertex AI PipelineJob) file')
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=image, use_pipeline_spec_2_1=True))
  job = runner.run(pipeline, write_out=False)
  if output_path.endswith(_YAML_SUFFIXES):
    document = dict(job['pipelineSpec'],
                    defaultPipelineRoot=job['runtimeConfig']['gcsOutputDirectory'])
    text = yaml.safe_dump(document, sort_keys=True)
  else:
    document = job
    text = json.dumps(job, sort_keys=True, indent=2)
  with tfx.dsl.io.fileio.open(output_path, 'w') as f:
    f.write(text)
  return document


def submit(package: str, host: Optional[str], experiment: str, run_name: Optional[str],
           namespace: Optional[str]) -> str:
  """Starts a run of a compiled YAML package on a KFP endpoint; returns its id."""
  if not package.endswith(_YAML_SUFFIXES):
    raise ValueError(f'--package {package}: kfp.Client uploads YAML pipeline specs; '
                     'compile with --output <name>.yaml')
  client = kfp.Client(host=host, namespace=namespace)
  result = client.create_run_from_pipeline_package(
      package, run_name=run_name, experiment_name=experiment, namespace=namespace)
  return result.run_id


def _beam_args(args: argparse.Namespace) -> List[str]:
  """The Beam options of the `compile` flags (pipeline/beam_args.py builds them)."""
  if args.beam_runner == 'dataflow':
    options = beam_args.dataflow_beam_args(
        args.gcp_project, args.gcp_region, _dataflow_temp_location(args), args.image,
        args.dataflow_max_workers, args.dataflow_service_account)
  elif args.beam_runner == 'flink':
    environment_config = args.flink_environment_config or {
        'EXTERNAL': beam_args.DEFAULT_FLINK_WORKER_POOL,
        'DOCKER': args.image}[args.flink_environment_type]
    options = beam_args.flink_beam_args(args.flink_master, args.flink_environment_type,
                                environment_config, args.flink_version, args.flink_parallelism)
  else:
    options = beam_args.direct_beam_args(args.beam_workers)
  return options + list(args.beam_arg)


def _dataflow_temp_location(args: argparse.Namespace) -> str:
  return args.dataflow_temp_location or f'{args.pipeline_root}/tmp/dataflow'


def _object_store_uri(value: str) -> str:
  if not value.startswith(_OBJECT_STORE_SCHEMES):
    raise argparse.ArgumentTypeError(
        f'{value!r} is not an object-storage URI ({", ".join(_OBJECT_STORE_SCHEMES)}...): '
        'component pods share no local disk')
  return value.rstrip('/')


def _non_negative_int(value: str) -> int:
  number = int(value)
  if number < 0:
    raise argparse.ArgumentTypeError(f'{value} is negative')
  return number


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  compile_ = commands.add_parser('compile', help='Compile the pipeline into a KFP v2 spec file.')
  _add_compile_arguments(compile_)
  _add_beam_arguments(compile_.add_argument_group(
      'Beam (ImageCaptionExampleGen, StatisticsGen, Transform, ...)'))
  _add_resource_arguments(compile_.add_argument_group(
      'Trainer resources (CaptionTrainer, BaselineTrainer)'))
  _add_submit_arguments(commands.add_parser('submit', help='Start a run of a compiled YAML spec.'))
  return parser


def _add_compile_arguments(compile_: argparse.ArgumentParser) -> None:
  """Where the pipeline reads and writes, and the settings both runners share."""
  compile_.add_argument('--output', required=True,
                        help='Spec file to write: .yaml/.yml for Kubeflow Pipelines, '
                             '.json for a Vertex AI PipelineJob.')
  compile_.add_argument('--image', required=True,
                        help='The pipeline image (see Dockerfile) every component runs in.')
  compile_.add_argument('--pipeline_root', required=True, type=_object_store_uri,
                        help='Where component outputs go, e.g. gs://bucket/captioner/root.')
  compile_.add_argument('--data_root', required=True, type=_object_store_uri,
                        help='The dataset folder, in any layout the local runner reads (docs/datasets.md: '
                             'Flickr8k, Flickr30k, MS COCO 2014, Karpathy split files).')
  compile_.add_argument('--serving_dir', required=True, type=_object_store_uri,
                        help='TF Serving base directory; the Pusher writes '
                             '<serving_dir>/<model_name>/<version>/.')
  compile_.add_argument('--schema_path', default=IMAGE_SCHEMA_PATH,
                        help='The raw-data schema as the components see it (in the image).')
  compile_.add_argument('--target', choices=['kfp', 'vertex'], default='kfp',
                        help="'kfp': open-source Kubeflow Pipelines, which cannot run the "
                             "last-blessed-model resolver, so the gate uses absolute thresholds; "
                             "'vertex': Vertex AI Pipelines, with the resolver.")
  settings.add_arguments(compile_)


def _add_beam_arguments(beam) -> None:
  """The Beam runner of the Beam-backed components and its options, in `compile`'s group `beam`."""
  beam.add_argument('--beam_runner', choices=beam_args.BEAM_RUNNERS, default='direct',
                    help='direct: in the component pod; dataflow or flink: a distributed runner.')
  beam.add_argument('--beam_workers', type=_non_negative_int, default=0,
                    help='direct: worker processes (threads for the ExampleGen); 0 means one per '
                         'core of the pod.')
  beam.add_argument('--gcp_project', help='dataflow: the Google Cloud project.')
  beam.add_argument('--gcp_region', help='dataflow: the region, e.g. europe-west1.')
  beam.add_argument('--dataflow_temp_location', type=_object_store_uri,
                    help='dataflow: gs:// scratch (default <pipeline_root>/tmp/dataflow).')
  beam.add_argument('--dataflow_max_workers', type=_non_negative_int, default=None)
  beam.add_argument('--dataflow_service_account', default=None,
                    help='dataflow: the workers\' service account e-mail.')
  beam.add_argument('--flink_master', help='flink: the JobManager REST address, host:8081.')
  beam.add_argument('--flink_version', default=None,
                    choices=beam_options.FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS,
                    help="flink: the cluster's Flink version (default: Beam's newest).")
  beam.add_argument('--flink_environment_type', choices=beam_args.FLINK_ENVIRONMENT_TYPES,
                    default='EXTERNAL', help='flink: where the Python workers run.')
  beam.add_argument('--flink_environment_config', default=None,
                    help=f'flink: EXTERNAL worker pool address (default '
                         f'{beam_args.DEFAULT_FLINK_WORKER_POOL}), DOCKER image (default --image), '
                         'or PROCESS boot command (required).')
  beam.add_argument('--flink_parallelism', type=_non_negative_int, default=None)
  beam.add_argument('--beam_arg', action='append', default=[],
                    help='An extra Beam option, appended as is (repeatable), '
                         'e.g. --beam_arg=--machine_type=n1-highmem-4.')


def _add_resource_arguments(resources) -> None:
  """The container resources of the Trainers (and of the feature pass with Beam in-pod)."""
  resources.add_argument('--gpu_count', type=_non_negative_int, default=1,
                         help='GPUs per Trainer; 0 trains on CPU.')
  resources.add_argument('--gpu_type', default=DEFAULT_GPU_TYPE,
                         help=f'{DEFAULT_GPU_TYPE} on Kubeflow Pipelines; on Vertex AI a '
                              'machine accelerator such as NVIDIA_TESLA_T4.')
  resources.add_argument('--trainer_cpu_limit', type=float, default=None, help='vCPUs.')
  resources.add_argument('--trainer_memory_limit', type=float, default=None, help='GB.')


def _add_submit_arguments(submit_: argparse.ArgumentParser) -> None:
  """Which compiled spec to start, and where."""
  submit_.add_argument('--package', required=True, help='The YAML written by `compile`.')
  submit_.add_argument('--host', default=None,
                       help='The KFP API endpoint, e.g. https://<host>/pipeline '
                            '(default: the in-cluster service).')
  submit_.add_argument('--experiment', default='captioner')
  submit_.add_argument('--run_name', default=None)
  submit_.add_argument('--namespace', default=None,
                       help='Kubeflow profile namespace (multi-user installs).')


def _check_runner_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Flags a runner needs that argparse cannot require on its own."""
  needed = {'dataflow': ['gcp_project', 'gcp_region'], 'flink': ['flink_master']}
  missing = [name for name in needed.get(args.beam_runner, []) if not getattr(args, name)]
  if missing:
    parser.error(f'--beam_runner {args.beam_runner} needs '
                 + ', '.join(f'--{name}' for name in missing))
  if args.beam_runner == 'dataflow' and not _dataflow_temp_location(args).startswith('gs://'):
    parser.error(f'--beam_runner dataflow needs a gs:// temp location, got '
                 f'{_dataflow_temp_location(args)} (set --dataflow_temp_location)')
  if (args.beam_runner == 'flink' and args.flink_environment_type == 'PROCESS'
      and not args.flink_environment_config):
    parser.error('--flink_environment_type PROCESS needs --flink_environment_config')


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  if args.command == 'compile':
    _check_runner_flags(parser, args)
    compile_pipeline(build_pipeline(args), args.image, args.output)
    print(f'Wrote {args.output}')
  else:
    run_id = submit(args.package, args.host, args.experiment, args.run_name, args.namespace)
    print(f'Started run {run_id}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
