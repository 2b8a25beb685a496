"""What a bulk run works on: the image paths, the model version, what earlier runs captioned.

Everything here runs in the driver, before the Beam pipeline starts, so a bad
--input or --model fails at once with one line (InputError) and no worker starts.
"""
import dataclasses
import json
import os
from typing import Iterable, List, Set, Tuple

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from components import names
from serving import servables

# Files under --output, one set per run ('<prefix>-<run id>-SSSSS-of-NNNNN.jsonl').
CAPTIONS_PREFIX = 'captions'
REJECTS_PREFIX = 'rejects'
OUTPUT_SUFFIX = '.jsonl'
# Fields of the output lines.
PATH_FIELD = 'path'
MODEL_VERSION_FIELD = 'model_version'
# An --input file with one of these extensions is one image; any other file lists paths.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
_GLOB_CHARACTERS = '*?['
# The serving signature's contract (components/names.py) the job calls.
_CAPTION_OUTPUTS = (names.CAPTION_OUTPUT, names.LOG_PROBABILITY_OUTPUT, names.CAPTIONS_OUTPUT,
                    names.LOG_PROBABILITIES_OUTPUT)


class InputError(ValueError):
  """A bad --input, --model or --output; the message is the one line shown."""


@dataclasses.dataclass(frozen=True)
class Model:
  path: str  # the version folder holding saved_model.pb
  version: str  # its folder name: TF Serving's version number, or the folder's name


def _is_file(path: str) -> bool:
  return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _files_under(folder: str) -> List[str]:
  """Every file under `folder`, recursively, sorted: a file that is not an image is rejected, not skipped."""
  found = []
  for directory, _, names in tf.io.gfile.walk(folder):
    found.extend(os.path.join(directory, name) for name in names)
  return sorted(found)


def _listed(list_file: str) -> List[str]:
  """The non-blank lines of a list file; relative paths are relative to the list file's folder."""
  with tf.io.gfile.GFile(list_file) as f:
    lines = [line.strip() for line in f]
  base = os.path.dirname(list_file)
  return [line if line.startswith('/') or '://' in line else os.path.join(base, line)
          for line in lines if line]


def list_inputs(spec: str) -> List[str]:
  """The image paths `spec` names, each once, in order: a folder (every file under it), a glob
  (local or gs://), an image file, or a text file of paths (one a line; those need not exist:
  a missing one is rejected as unreadable)."""
  if any(c in spec for c in _GLOB_CHARACTERS):
    paths = sorted(p for p in tf.io.gfile.glob(spec) if not tf.io.gfile.isdir(p))
  elif tf.io.gfile.isdir(spec):
    paths = _files_under(spec)
  elif _is_file(spec):
    paths = [spec] if spec.lower().endswith(IMAGE_EXTENSIONS) else _listed(spec)
  else:
    raise InputError(f'--input {spec}: no such folder or file, and no glob')
  return list(dict.fromkeys(paths))  # a path listed twice is one input


def _signature_def(version_dir: str):
  """The serving signature of the SavedModel in `version_dir`, read from saved_model.pb without loading it."""
  with tf.io.gfile.GFile(os.path.join(version_dir, tf.saved_model.SAVED_MODEL_FILENAME_PB), 'rb') as f:
    saved_model = saved_model_pb2.SavedModel.FromString(f.read())
  for meta_graph in saved_model.meta_graphs:
    if tf.saved_model.SERVING in meta_graph.meta_info_def.tags:
      return meta_graph.signature_def.get(names.CAPTION_SIGNATURE)
  return None


def resolve_model(spec: str) -> Model:
  """A SavedModel folder, or the newest numeric version under a TF Serving base folder;
  InputError unless it has the caption signature (string `images` in, the caption outputs out)."""
  spec = spec.rstrip('/')
  if _is_file(os.path.join(spec, tf.saved_model.SAVED_MODEL_FILENAME_PB)):
    model = Model(spec, os.path.basename(spec))
  else:
    versions = servables.list_versions(spec)
    if not versions:
      raise InputError(f'--model {spec}: no model version there (a numeric folder holding '
                       f'{tf.saved_model.SAVED_MODEL_FILENAME_PB}), and not a SavedModel folder itself')
    model = Model(os.path.join(spec, str(versions[-1])), str(versions[-1]))
  signature = _signature_def(model.path)
  missing = [] if signature is None else (
      [name for name in (names.IMAGES_INPUT,) if name not in signature.inputs]
      + [name for name in _CAPTION_OUTPUTS if name not in signature.outputs])
  if signature is None or missing:
    raise InputError(f'--model {model.path}: the SavedModel has no caption signature '
                     f'{names.CAPTION_SIGNATURE!r} (input {names.IMAGES_INPUT!r}, outputs '
                     f'{", ".join(_CAPTION_OUTPUTS)})' + (f'; missing {", ".join(missing)}' if missing else ''))
  return model


def output_files(output: str, prefix: str, run_id: str = '*') -> List[str]:
  """The committed output files of `prefix` (CAPTIONS_PREFIX or REJECTS_PREFIX) of one run or all."""
  return sorted(tf.io.gfile.glob(os.path.join(output, f'{prefix}-{run_id}-*{OUTPUT_SUFFIX}')))


def read_lines(paths: Iterable[str]) -> Iterable[dict]:
  """The JSON objects of output files, one a line."""
  for path in paths:
    with tf.io.gfile.GFile(path) as f:
      for number, line in enumerate(f, start=1):
        try:
          yield json.loads(line)
        except ValueError as e:
          raise InputError(f'{path}:{number}: not a JSON line ({e})') from None


def captioned(output: str, version: str) -> Set[str]:
  """Paths earlier runs under `output` captioned with model `version` (what a rerun skips)."""
  return {line[PATH_FIELD] for line in read_lines(output_files(output, CAPTIONS_PREFIX))
          if line.get(MODEL_VERSION_FIELD) == version}


def split_done(paths: List[str], done: Set[str]) -> Tuple[List[str], int]:
  """(paths still to caption, how many `done` skips)."""
  todo = [path for path in paths if path not in done]
  return todo, len(paths) - len(todo)
