"""The Beam options of the Beam-backed components, one builder per Beam runner.

The ExampleGen, StatisticsGen, Transform and the other Beam-backed components
all run with the pipeline's `beam_pipeline_args`; the runners build them here
from their flags: the local runner on the DirectRunner, the Kubeflow runner on
the DirectRunner in the component pod, on Dataflow or on a Flink cluster.
"""
import os
from typing import Dict, List, Optional

from components import beam_direct
from components import names

BEAM_RUNNERS = ('direct', 'dataflow', 'flink')
FLINK_ENVIRONMENT_TYPES = ('EXTERNAL', 'DOCKER', 'PROCESS')
# The address of a Beam SDK worker pool running next to each Flink task manager.
DEFAULT_FLINK_WORKER_POOL = 'localhost:50000'


# Nodes whose Beam work is TensorFlow ops that release the GIL: on the
# DirectRunner they run on threads (see `direct_thread_beam_args`).
THREADED_NODE_IDS = (names.EXAMPLE_GEN,)
# Nodes whose records (the image bytes) pass between Beam stages: on the
# DirectRunner they run in the component's own process (see
# `direct_in_process_beam_args`), where nothing is lost on the way.
IN_PROCESS_NODE_IDS = (names.FEATURE_GEN,)
# This project's setup.py: present in a clone and in the pipeline image (/pipeline).
_SETUP_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'setup.py')


def _local_dependency_args() -> List[str]:
  """Tells TFX that the DirectRunner's workers have this project's packages.

  Without one of --setup_file, --extra_packages, ... every Beam-backed TFX
  executor builds an sdist of TFX itself to ship to remote workers
  (tfx.utils.dependency_utils): 1.3 s per component on 2 cores, for workers
  that run from this very Python environment and never read it.
  """
  return [f'--setup_file={_SETUP_FILE}'] if os.path.exists(_SETUP_FILE) else []


def direct_beam_args(num_workers: int) -> List[str]:
  """Beam's DirectRunner in multi-processing mode; 0 workers means one per core."""
  return ['--direct_running_mode=multi_processing', f'--direct_num_workers={num_workers}',
          *_local_dependency_args()]


def direct_thread_beam_args(num_threads: int) -> List[str]:
  """Beam's DirectRunner in multi-threading mode; 0 threads means one per core.

  For Beam work that is mostly TensorFlow ops, which release the GIL (the
  ExampleGen's image decoding): threads of the component's own process run it
  in parallel without starting worker processes that import TensorFlow again
  (about 3 s each on 2 cores). Two runs with the same number of threads write
  the same output: the runner splits a stage's input round-robin, and the
  ExampleGen numbers the shards its threads write by their content.
  """
  return ['--direct_running_mode=multi_threading', f'--direct_num_workers={num_threads}',
          *_local_dependency_args()]


def direct_in_process_beam_args() -> List[str]:
  """Beam's DirectRunner in the component's own process (components/beam_direct.py says why)."""
  return [*beam_direct.IN_PROCESS_ARGS, *_local_dependency_args()]


def direct_node_beam_args(num_workers: int) -> Dict[str, List[str]]:
  """Per-node Beam options on the DirectRunner (`create_pipeline`'s
  `node_beam_pipeline_args`): the THREADED_NODE_IDS on `num_workers`
  threads, the IN_PROCESS_NODE_IDS in their own process."""
  return {**{node_id: direct_thread_beam_args(num_workers) for node_id in THREADED_NODE_IDS},
          **{node_id: direct_in_process_beam_args() for node_id in IN_PROCESS_NODE_IDS}}


def dataflow_beam_args(project: str, region: str, temp_location: str, image: str,
                       max_num_workers: Optional[int] = None,
                       service_account: Optional[str] = None) -> List[str]:
  """Beam on Dataflow, with the pipeline image as the workers' SDK container.

  The workers then have the same code and pinned packages as the component
  pods (ImageCaptionExampleGen's DoFns and the Transform module live in this
  project); --sdk_location=container stops Dataflow staging another SDK.
  """
  args = ['--runner=DataflowRunner', f'--project={project}', f'--region={region}',
          f'--temp_location={temp_location}', f'--sdk_container_image={image}',
          '--sdk_location=container']
  if max_num_workers is not None:
    args.append(f'--max_num_workers={max_num_workers}')
  if service_account:
    args.append(f'--service_account_email={service_account}')
  return args


def flink_beam_args(flink_master: str, environment_type: str, environment_config: str,
                    flink_version: Optional[str] = None,
                    parallelism: Optional[int] = None) -> List[str]:
  """Beam on a Flink cluster through its REST endpoint.

  --flink_submit_uber_jar uploads the job as one jar, so the component pod
  needs no Java job server. The Python workers run in `environment_type`:
  EXTERNAL is a Beam worker pool (the pipeline image started with
  `/opt/apache/beam/boot --worker_pool`) next to each task manager, DOCKER
  starts the image per task manager, PROCESS runs a boot command there.
  """
  args = ['--runner=FlinkRunner', f'--flink_master={flink_master}', '--flink_submit_uber_jar',
          f'--environment_type={environment_type}',
          f'--environment_config={environment_config}']
  if flink_version:
    args.append(f'--flink_version={flink_version}')
  if parallelism is not None:
    args.append(f'--parallelism={parallelism}')
  return args
