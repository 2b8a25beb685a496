"""Finds, loads and hot-swaps the versions of one model under a TF Serving base path.

Does what TF Serving's file-system storage path source and its default
`latest` version policy do for one model: a version is an integer-named
subdirectory of the base path holding a saved_model.pb (what the TFX Pusher
writes; a name that does not fit in an int64 is ignored with a warning, as TF
Serving ignores it); only the highest such version is served; each poll of the base path
picks up a newly pushed version (or, after the highest is deleted, the one
below it) without a restart. The old version keeps answering until the new one
has loaded (and replayed its warm-up requests, if any), and requests already
running on it finish on it.

Requests name what they want with a ModelSpec; `ModelManager.servable` and
`ModelManager.version_states` resolve it with TF Serving's status codes and
messages (NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for a
version label, since this server has none configured).
"""
import dataclasses
import logging
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional

import grpc
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2

from serving.errors import ServingError

_LOG = logging.getLogger(__name__)

State = get_model_status_pb2.ModelVersionStatus.State


class ModelLoadError(Exception):
  """A version directory could not be loaded as a serving SavedModel."""


@dataclasses.dataclass(frozen=True)
class Servable:
  """One loaded version of the model."""
  model_name: str
  version: int
  path: str
  # Every SignatureDef of the 'serve' MetaGraph, keyed by signature name,
  # exactly as TF Serving reports them in GetModelMetadata.
  signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]
  # Signature name -> concrete function taking the inputs as keyword tensors
  # and returning a dict of output tensors.
  functions: Mapping[str, Callable[..., Dict[str, tf.Tensor]]]
  # The object tf.saved_model.load returned: it owns the variables the
  # functions read, so it must live as long as they do.
  root: Any
  # Warm-up requests replayed before the version became AVAILABLE.
  warmup_records: int = 0


@dataclasses.dataclass(frozen=True)
class VersionState:
  """What GetModelStatus reports for one version."""
  version: int
  state: int  # a get_model_status_pb2.ModelVersionStatus.State
  error_code: grpc.StatusCode = grpc.StatusCode.OK
  error_message: str = ''


def _describe_request(model_spec):
  """TF Serving's ServableRequest::DebugString, used in its NOT_FOUND messages."""
  if model_spec.HasField('version'):
    return f'Specific({model_spec.name}, {model_spec.version.value})'
  return f'Latest({model_spec.name})'


# TF Serving's version numbers are int64 (ModelSpec.version is an Int64Value).
_MAX_VERSION = 2 ** 63 - 1
_warned_paths = set()  # directories already warned about, so each poll does not warn again


def list_versions(base_path):
  """The version numbers under `base_path` that hold a SavedModel, ascending ([] if it does not exist)."""
  if not tf.io.gfile.isdir(base_path):
    return []
  versions = []
  for entry in tf.io.gfile.listdir(base_path):
    name = entry.rstrip('/')
    if not (name.isascii() and name.isdigit()) or not tf.io.gfile.exists(
            os.path.join(base_path, name, tf.saved_model.SAVED_MODEL_FILENAME_PB)):
      continue
    if int(name) > _MAX_VERSION:
      path = os.path.join(base_path, name)
      if path not in _warned_paths:
        _warned_paths.add(path)
        _LOG.warning('Ignoring %s: its name is not a version number TF Serving accepts (an int64, '
                     'at most %d).', path, _MAX_VERSION)
      continue
    versions.append(int(name))
  return sorted(versions)


def _fingerprint(path):
  """(file, size, mtime) of every file under `path`: changes while a version is being copied."""
  files = []
  for directory, _, names in tf.io.gfile.walk(path):
    for name in names:
      stat = tf.io.gfile.stat(os.path.join(directory, name))
      files.append((os.path.relpath(os.path.join(directory, name), path), stat.length, stat.mtime_nsec))
  return tuple(sorted(files))


def load_servable(model_name, version, path):
  """Loads one version directory; raises ModelLoadError naming the directory."""
  pb_path = os.path.join(path, tf.saved_model.SAVED_MODEL_FILENAME_PB)
  try:
    with tf.io.gfile.GFile(pb_path, 'rb') as f:
      saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    meta_graphs = [m for m in saved_model.meta_graphs if tf.saved_model.SERVING in m.meta_info_def.tags]
    if not meta_graphs:
      raise ModelLoadError(f'{pb_path} has no MetaGraph tagged {tf.saved_model.SERVING!r}.')
    root = tf.saved_model.load(path, tags=[tf.saved_model.SERVING])
  except ModelLoadError:
    raise
  except Exception as e:  # anything from a half-copied or foreign directory means "not loadable"
    raise ModelLoadError(f'Could not load version {version} of model {model_name} from {path}: {e}') from e
  return Servable(model_name=model_name, version=version, path=path,
                  signature_defs=dict(meta_graphs[0].signature_def),
                  functions=dict(root.signatures), root=root)


class ModelManager:
  """Serves the newest loadable version of `model_name` found under `base_path`.

  warm_up: called with each newly loaded Servable before it goes into
  service; returns the number of warm-up requests it replayed, or raises
  ModelLoadError (the version then is not served).
  """

  def __init__(self, model_name, base_path, warm_up: Callable[[Servable], int] = lambda servable: 0):
    self.model_name = model_name
    self.base_path = base_path
    self._warm_up = warm_up
    self._lock = threading.Lock()
    self._servable: Optional[Servable] = None
    self._states: Dict[int, VersionState] = {}
    self._failed: Dict[int, tuple] = {}  # version -> its files' fingerprint when it failed to load

  @property
  def current(self) -> Optional[Servable]:
    with self._lock:
      return self._servable

  def poll(self):
    """Loads the newest version if it is not the one being served.

    Returns True if a version was (re)placed into service. Raises
    ModelLoadError if the newest version fails to load; the version being
    served (if any) stays in service. A failed version is tried again only
    once its files change, so a version that was still being copied is
    picked up when complete, and a broken one is not reloaded every poll.
    """
    versions = list_versions(self.base_path)
    if not versions:
      return False
    newest = versions[-1]
    current = self.current
    if current is not None and current.version == newest:
      return False
    path = os.path.join(self.base_path, str(newest))
    fingerprint = _fingerprint(path)
    if self._failed.get(newest) == fingerprint:
      return False
    self._set_state(VersionState(newest, State.LOADING))
    try:
      servable = load_servable(self.model_name, newest, path)
      servable = dataclasses.replace(servable, warmup_records=self._warm_up(servable))
    except ModelLoadError as e:
      self._failed[newest] = fingerprint
      self._set_state(VersionState(newest, State.END, grpc.StatusCode.UNKNOWN, str(e)))
      raise
    self._failed.pop(newest, None)
    with self._lock:
      self._servable = servable
      self._states[newest] = VersionState(newest, State.AVAILABLE)
      if current is not None:
        self._states[current.version] = VersionState(current.version, State.END)
    _LOG.info('Serving version %d of model %s from %s%s%s', newest, self.model_name, path,
              f' (replaces version {current.version})' if current is not None else '',
              f', warmed up with {servable.warmup_records} requests' if servable.warmup_records else '')
    return True

  def servable(self, model_spec) -> Servable:
    """The servable a request's ModelSpec names, or ServingError with TF Serving's status."""
    self._check_name(model_spec)
    servable = self.current
    if (model_spec.name != self.model_name or servable is None
            or (model_spec.HasField('version') and model_spec.version.value != servable.version)):
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f'Servable not found for request: {_describe_request(model_spec)}')
    return servable

  def version_states(self, model_spec) -> List[VersionState]:
    """GetModelStatus: the state of the requested version, or of every version seen."""
    self._check_name(model_spec)
    with self._lock:
      states = dict(self._states) if model_spec.name == self.model_name else {}
    if model_spec.HasField('version'):
      version = model_spec.version.value
      if version not in states:
        raise ServingError(grpc.StatusCode.NOT_FOUND,
                           f'Could not find version {version} of model {model_spec.name}')
      return [states[version]]
    if not states:
      raise ServingError(grpc.StatusCode.NOT_FOUND,
                         f'Could not find any versions of model {model_spec.name}')
    return [states[v] for v in sorted(states, reverse=True)]

  @staticmethod
  def _check_name(model_spec):
    if not model_spec.name:
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, 'ModelSpec has no name specified.')
    if model_spec.WhichOneof('version_choice') == 'version_label':
      raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                         f'Unrecognized servable version label: {model_spec.version_label}')

  def _set_state(self, state):
    with self._lock:
      self._states[state.version] = state
