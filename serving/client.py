"""Captions images through TF Serving's Predict API, over gRPC or REST: a library and a command line.

Works against tensorflow_model_server and against the local server
(serving.server) alike: over gRPC it speaks only PredictionService.Predict
and GetModelMetadata from tensorflow-serving-api; over REST (--protocol rest)
only POST /v1/models/<name>:predict and GET /v1/models/<name>/metadata; with
the model name, an optional version or version label, and the signature name.

    python -m serving.client --server localhost:8500 --model_name captioner photo.jpg
    python -m serving.client --server localhost:8500 --model_name captioner --format jsonl photos/
    python -m serving.client --protocol rest --server localhost:8501 --top_k 3 photo.jpg
    python -m serving.client --server localhost:8500 --attention_maps maps/ photos/

Files go out `--batch_size` to a request (fewer when their bytes would pass the
message size limit). Each call has a deadline; calls that fail with
UNAVAILABLE (server starting, restarting, or its queue full) are retried with
exponential backoff, and no other failure is. When a request fails because of
its contents (INVALID_ARGUMENT, RESOURCE_EXHAUSTED), its files are sent again
one by one so the error names the guilty file and the others still get their
captions; any other failure stops the run with an error naming the request.
Over REST, the status code is read back from TF Serving's HTTP status.

Output: one line per image, `path<TAB>caption<TAB>log_probability` (text);
with --top_k K, the K best captions of the beam search as that many
caption<TAB>log_probability pairs, best first. A tab, newline or backslash in
the path is written as \\t, \\n or \\\\, so every line splits the same way. Or
a JSON object per image (jsonl), with "top_captions" when K > 1. Failed
images go to stderr (text) or get an "error" object (jsonl). Exit status 1 if
any image failed.

With --attention_maps DIR (attention models only: the signature must have the
names.ATTENTION_OUTPUT output, checked before any image is sent), each
captioned image also gets one PNG per word of its caption in DIR,
`<image stem>-<t>-<word>.png` with t the word's position from 01: the image
(upright, at most ATTENTION_MAP_SIZE pixels on its longer side) lit where the
model looked for that word and dimmed elsewhere (components/attention_maps.py).
Images whose stems repeat get `<stem>-2`, `<stem>-3`, ... in input order; jsonl
lines list the files under "attention_maps".
"""
import argparse
import base64
import dataclasses
import json
import logging
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
import tqdm

from components import attention_maps
from components import caption_signatures
from components import names
from serving import rest_api

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
# Longer side of an attention map PNG, in pixels: the grid is coarse (14x14 at most
# today), so more pixels would show nothing more and only fill the disk.
ATTENTION_MAP_SIZE = 512
PROTOCOLS = ('grpc', 'rest')
# Bytes a request needs beyond the images themselves: the model spec, the
# tensor header, and a few bytes of framing per image.
_REQUEST_OVERHEAD_BYTES = 4096
_PER_IMAGE_OVERHEAD_BYTES = 16
# Request failures that belong to the contents of the request, so another
# request without the offending image can succeed.
_CONTENT_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)

@dataclasses.dataclass(frozen=True)
class Caption:
  """The model's caption for one image."""
  path: Optional[str]  # the file, or None for images passed as bytes
  caption: str  # words joined by single spaces
  log_probability: float  # log p(caption | image)
  model_version: Optional[int]  # the version that answered (None over REST, which does not say)
  # The beam search's best captions, best first ([0] is `caption`), and theirs.
  top_captions: Tuple[str, ...] = ()
  top_log_probabilities: Tuple[float, ...] = ()
  # Where an attention model looked for each word (float32 [max_length, grid_h, grid_w],
  # names.ATTENTION_OUTPUT); None for a model without that output.
  attention: Optional[np.ndarray] = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Failure:
  """An image that got no caption."""
  path: str
  code: str  # the gRPC status name, or READ_ERROR when the file could not be read
  message: str


class RequestError(Exception):
  """An RPC failed for good. `code` is its grpc.StatusCode; the message names the request."""

  def __init__(self, code, details, request):
    super().__init__(f'{request} failed: {code.name}: {details}')
    self.code = code
    self.details = details


class _CallError(Exception):
  """One attempt of a call failed with `code` (a grpc.StatusCode)."""

  def __init__(self, code, details):
    super().__init__(details)
    self.code = code
    self.details = details


def _import_tensorflow_serving_apis():
  """TensorFlow and tensorflow-serving-api's protos, imported when a gRPC call needs them.

  The protos import TensorFlow (seconds, and its C++ start-up messages), which
  --help and REST never need; those messages are kept quiet unless asked for.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # pylint: disable=import-outside-toplevel
  import tensorflow as tf
  from tensorflow_serving.apis import get_model_metadata_pb2
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  return tf, get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc


class _GrpcTransport:
  """Predict and GetModelMetadata over gRPC."""

  def __init__(self, target, max_message_bytes, initial_backoff_s, max_backoff_s):
    (self._tf, self._metadata_pb2, self._predict_pb2,
     prediction_service_pb2_grpc) = _import_tensorflow_serving_apis()
    backoff_ms = int(initial_backoff_s * 1000)
    self._channel = grpc.insecure_channel(target, options=[
        ('grpc.max_send_message_length', max_message_bytes),
        ('grpc.max_receive_message_length', max_message_bytes),
        # gRPC reconnects on its own schedule (1 s, growing to 2 min); keep it
        # at least as eager as our retries, or they all fail fast.
        ('grpc.initial_reconnect_backoff_ms', backoff_ms),
        ('grpc.min_reconnect_backoff_ms', backoff_ms),
        ('grpc.max_reconnect_backoff_ms', int(max_backoff_s * 1000)),
    ])
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self.payload_bytes = max_message_bytes

  def close(self):
    self._channel.close()

  def _invoke(self, method, request, timeout_s):
    try:
      return method(request, timeout=timeout_s)
    except grpc.RpcError as e:
      raise _CallError(e.code(), e.details()) from None

  def signature_outputs(self, client, timeout_s):
    """-> signature name -> its output aliases, sorted."""
    request = self._metadata_pb2.GetModelMetadataRequest(metadata_field=[names.SIGNATURE_DEF_METADATA_FIELD])
    client.fill_model_spec(request.model_spec)
    response = self._invoke(self._stub.GetModelMetadata, request, timeout_s)
    signature_map = self._metadata_pb2.SignatureDefMap()
    response.metadata[names.SIGNATURE_DEF_METADATA_FIELD].Unpack(signature_map)
    return {name: sorted(signature.outputs) for name, signature in signature_map.signature_def.items()}

  def predict(self, client, input_name, values, timeout_s):
    """-> (alias -> numpy array, the version that answered)."""
    tf = self._tf
    request = self._predict_pb2.PredictRequest()
    client.fill_model_spec(request.model_spec)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string, shape=[len(values)]))
    response = self._invoke(self._stub.Predict, request, timeout_s)
    try:
      outputs = {key: tf.make_ndarray(tensor) for key, tensor in response.outputs.items()}
    except (TypeError, ValueError) as e:
      raise _CallError(grpc.StatusCode.INTERNAL, f'unexpected response: {e}') from e
    return outputs, response.model_spec.version.value


class _RestTransport:
  """Predict and GetModelMetadata over TF Serving's REST API (images sent as {"b64": ...})."""

  def __init__(self, target, max_message_bytes):
    self._base = f'http://{target}/v1/models/'
    self.payload_bytes = max_message_bytes * 3 // 4  # base64 makes 4 bytes of 3

  def close(self):
    pass

  def _url(self, client, suffix):
    url = self._base + urllib.parse.quote(client.model_name, safe='')
    if client.version is not None:
      url += f'/versions/{client.version}'
    elif client.version_label is not None:
      url += '/labels/' + urllib.parse.quote(client.version_label, safe='')
    return url + suffix

  def _invoke(self, url, body, timeout_s):
    request = urllib.request.Request(url, data=body, headers={'Content-Type': 'application/json'})
    try:
      with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())
    except urllib.error.HTTPError as e:
      try:
        details = json.loads(e.read())[rest_api.ERROR_KEY]
      except (ValueError, KeyError, TypeError):
        details = f'HTTP {e.code} {e.reason}'
      raise _CallError(rest_api.status_code(e.code), details) from None
    except socket.timeout:
      raise _CallError(grpc.StatusCode.DEADLINE_EXCEEDED, 'Deadline Exceeded') from None
    except (urllib.error.URLError, ConnectionError) as e:  # not listening (yet), or dropped
      raise _CallError(grpc.StatusCode.UNAVAILABLE, str(getattr(e, 'reason', e))) from None
    except ValueError as e:
      raise _CallError(grpc.StatusCode.INTERNAL, f'unexpected response: {e}') from None

  def signature_outputs(self, client, timeout_s):
    """-> signature name -> its output aliases, sorted."""
    document = self._invoke(self._url(client, '/metadata'), None, timeout_s)
    field = names.SIGNATURE_DEF_METADATA_FIELD  # SignatureDefMap as JSON: {"signature_def": {name: ...}}
    try:
      return {name: sorted(signature.get('outputs', {}))
              for name, signature in document[rest_api.METADATA_KEY][field][field].items()}
    except (KeyError, TypeError, AttributeError) as e:
      raise _CallError(grpc.StatusCode.INTERNAL, f'unexpected metadata: {e!r}') from None

  def predict(self, client, input_name, values, timeout_s):
    """-> (alias -> numpy array, None: REST answers do not name the version)."""
    body = json.dumps({rest_api.SIGNATURE_KEY: client.signature_name,
                       rest_api.INSTANCES_KEY: [{rest_api.BASE64_KEY: base64.b64encode(v).decode('ascii')}
                                               for v in values]}).encode('utf-8')
    document = self._invoke(self._url(client, ':predict'), body, timeout_s)
    try:
      rows = document[rest_api.PREDICTIONS_KEY]
      outputs = {alias: np.array([_string_bytes(row[alias]) for row in rows], dtype=object)
                 if alias in (names.CAPTION_OUTPUT, names.CAPTIONS_OUTPUT)
                 else np.array([row[alias] for row in rows], dtype=np.float32)
                 for alias in (rows[0] if rows else {})}
    except (KeyError, TypeError, ValueError) as e:
      raise _CallError(grpc.StatusCode.INTERNAL, f'unexpected response: {e}') from None
    return outputs, client.version


def _string_bytes(value):
  """A JSON string, or a list of them, as UTF-8 bytes (what the gRPC answer holds)."""
  return [v.encode('utf-8') for v in value] if isinstance(value, list) else value.encode('utf-8')


class CaptionClient:
  """A connection to one model on one TF Serving (or local) server.

  Args:
    target: 'host:port' of the gRPC endpoint (or of the REST one, with protocol='rest').
    model_name: the name the server serves the model under.
    protocol: 'grpc' or 'rest'.
    version: ask for this version (default: the newest the server has).
    version_label: or ask for the version a label points to (TF Serving only).
    signature_name: names.CAPTION_SIGNATURE (image bytes) or
      names.EXAMPLES_SIGNATURE (the client wraps images in tf.Examples).
    timeout_s: deadline of each call, retries excluded.
    max_attempts: calls per request when the server is UNAVAILABLE.
    initial_backoff_s, max_backoff_s: wait before the 2nd attempt, doubling up to the max (with jitter).
    max_message_bytes: the largest request and response this client sends or accepts.
  """

  def __init__(self, target, model_name, *, protocol='grpc', version=None, version_label=None,
               signature_name=names.CAPTION_SIGNATURE, timeout_s=30.0, max_attempts=5,
               initial_backoff_s=0.5, max_backoff_s=8.0, max_message_bytes=names.MAX_MESSAGE_BYTES):
    if version is not None and version_label is not None:
      raise ValueError('Give a model version or a version label, not both.')
    if max_attempts < 1:
      raise ValueError(f'max_attempts must be at least 1, got {max_attempts}.')
    if protocol not in PROTOCOLS:
      raise ValueError(f'protocol must be one of {PROTOCOLS}, got {protocol!r}.')
    self.target = target
    self.model_name = model_name
    self.protocol = protocol
    self.version = version
    self.version_label = version_label
    self.signature_name = signature_name
    self.timeout_s = timeout_s
    self.max_attempts = max_attempts
    self.initial_backoff_s = initial_backoff_s
    self.max_backoff_s = max_backoff_s
    self.max_message_bytes = max_message_bytes
    self._transport = (_GrpcTransport(target, max_message_bytes, initial_backoff_s, max_backoff_s)
                       if protocol == 'grpc' else _RestTransport(target, max_message_bytes))

  def close(self):
    self._transport.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def describe(self):
    """One line naming the model spec requests ask for, for messages."""
    choice = (f' version {self.version}' if self.version is not None
              else f' label {self.version_label!r}' if self.version_label is not None else '')
    return (f'model {self.model_name!r}{choice} signature {self.signature_name!r} at {self.target}'
            + (' (REST)' if self.protocol == 'rest' else ''))

  def check_signature(self, required_outputs: Sequence[str] = ()):
    """Raises RequestError unless the server has the model, version and `signature_name` asked for,
    and that signature has every output of `required_outputs`.

    A cheap first call that catches a wrong model name, version, label,
    signature or kind of model before any image is sent.
    """
    outputs = self._call(lambda: self._transport.signature_outputs(self, self.timeout_s),
                         f'GetModelMetadata for {self.describe()}')
    if self.signature_name not in outputs:
      raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                         f'the model has no signature {self.signature_name!r}; it has {sorted(outputs)}',
                         self.describe())
    missing = [alias for alias in required_outputs if alias not in outputs[self.signature_name]]
    if missing:
      raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                         f'signature {self.signature_name!r} has no output {missing[0]!r} (it has '
                         f'{outputs[self.signature_name]})'
                         + (': it is not an attention model' if names.ATTENTION_OUTPUT in missing else ''),
                         self.describe())

  def caption(self, images: Sequence[bytes], paths: Optional[Sequence[str]] = None) -> List[Caption]:
    """Captions encoded images (JPEG/PNG/GIF/BMP bytes) in one request.

    `paths` only labels the results and error messages. Raises RequestError.
    """
    paths = list(paths) if paths is not None else [None] * len(images)
    input_name, values = caption_signatures.signature_inputs(self.signature_name, images)
    named = [p for p in paths if p is not None]
    what = f'Predict of {len(images)} image(s)' + (f' ({_abbreviate(named)})' if named else '')
    outputs, version = self._call(lambda: self._transport.predict(self, input_name, values, self.timeout_s),
                                  f'{what} on {self.describe()}')
    try:
      answer = caption_signatures.decode_outputs(outputs, len(images), self.describe())
    except ValueError as e:
      raise RequestError(grpc.StatusCode.INTERNAL, f'unexpected response: {e}', what) from e
    attention = answer.attention if answer.attention is not None else [None] * len(images)
    return [Caption(path, text, log_probability, version, tuple(top), tuple(top_log_probabilities), looked)
            for path, text, log_probability, top, top_log_probabilities, looked in zip(
                paths, answer.captions, answer.log_probabilities, answer.top_captions,
                answer.top_log_probabilities, attention)]

  def caption_files(self, paths: Sequence[str], batch_size=caption_signatures.DEFAULT_BATCH_SIZE,
                    progress=False, required_outputs: Sequence[str] = ()) -> Iterator[Union[Caption, Failure]]:
    """Captions image files, `batch_size` per request, yielding a Caption or Failure per file in order.

    Raises RequestError for failures that are not about a file's contents
    (unknown model or signature, or one without `required_outputs`, server
    down after all retries, deadline).
    """
    if batch_size < 1:
      raise ValueError(f'batch_size must be at least 1, got {batch_size}.')
    self.check_signature(required_outputs)
    with tqdm.tqdm(total=len(paths), unit='image', disable=not progress, file=sys.stderr) as bar:
      for batch in _batches(paths, batch_size, self._transport.payload_bytes):
        results = self._caption_batch(batch)
        bar.update(len(results))
        yield from results

  def _caption_batch(self, batch):
    """batch: list of (path, bytes or Failure) -> a Caption or Failure for each, in order."""
    results = [data if isinstance(data, Failure) else None for _, data in batch]
    pending = [i for i, result in enumerate(results) if result is None]
    if not pending:
      return results
    try:
      captions = self.caption([batch[i][1] for i in pending], [batch[i][0] for i in pending])
    except RequestError as e:
      if e.code not in _CONTENT_ERRORS:
        raise
      if len(pending) == 1:
        results[pending[0]] = Failure(batch[pending[0]][0], e.code.name, e.details)
        return results
      _LOG.info('Request of %d images failed with %s; sending them one by one.', len(pending), e.code.name)
      for i in pending:
        results[i] = self._caption_batch([batch[i]])[0]
      return results
    for i, caption in zip(pending, captions):
      results[i] = caption
    return results

  def fill_model_spec(self, model_spec):
    """Fills a request's ModelSpec with the model, version or label, and signature asked for."""
    model_spec.name = self.model_name
    model_spec.signature_name = self.signature_name
    if self.version is not None:
      model_spec.version.value = self.version
    elif self.version_label is not None:
      model_spec.version_label = self.version_label

  def _call(self, attempt_fn, what):
    """Runs `attempt_fn` (one call with the deadline), retrying UNAVAILABLE with exponential backoff."""
    for attempt in range(1, self.max_attempts + 1):
      try:
        return attempt_fn()
      except _CallError as e:
        if e.code != grpc.StatusCode.UNAVAILABLE or attempt == self.max_attempts:
          suffix = f' (after {attempt} attempts)' if attempt > 1 else ''
          raise RequestError(e.code, f'{e.details}{suffix}', what) from None
        delay = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: clients that failed together retry apart
        _LOG.warning('%s: UNAVAILABLE (%s); attempt %d of %d in %.1fs', what, e.details, attempt + 1,
                     self.max_attempts, delay)
        time.sleep(delay)


class AttentionMapWriter:
  """Writes the attention maps of captioned image files as PNGs into one folder (see the module doc).

  Each image's maps are named after its file's stem, made unique within the writer.
  """

  def __init__(self, out_dir: str, max_size: int = ATTENTION_MAP_SIZE):
    os.makedirs(out_dir, exist_ok=True)
    self.out_dir = out_dir
    self.max_size = max_size
    self._stems = set()

  def _stem(self, path: str) -> str:
    base = os.path.splitext(os.path.basename(path))[0]
    stem, count = base, 1
    while stem in self._stems:
      count += 1
      stem = f'{base}-{count}'
    self._stems.add(stem)
    return stem

  def write(self, caption: Caption) -> List[str]:
    """Writes one PNG per word of `caption` (its image read again from caption.path); returns their paths.

    Raises ValueError naming the file when the answer has no attention, or its
    image or attention cannot be drawn.
    """
    if caption.attention is None:
      raise ValueError(f'No attention maps for {caption.path}: the answer has no output '
                       f'{names.ATTENTION_OUTPUT!r}.')
    try:
      with open(caption.path, 'rb') as f:
        images = attention_maps.map_images(f.read(), caption.caption, caption.attention, self.max_size)
    except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError is an OSError
      raise ValueError(f'No attention maps for {caption.path}: {e}') from e
    stem = self._stem(caption.path)
    written = []
    for t, (word, image) in enumerate(images, start=1):
      path = os.path.join(self.out_dir, f'{stem}-{t:02d}-{attention_maps.file_word(word)}.png')
      image.save(path, format='PNG')
      written.append(path)
    return written


def find_images(paths: Iterable[str]) -> List[str]:
  """Expands folders (recursively, image extensions only, sorted); files are kept as given.

  Raises FileNotFoundError naming a path that does not exist.
  """
  found = []
  for path in paths:
    if os.path.isdir(path):
      for directory, subdirectories, files in os.walk(path):
        subdirectories.sort()
        found.extend(os.path.join(directory, name) for name in sorted(files)
                     if name.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.exists(path):
      found.append(path)
    else:
      raise FileNotFoundError(f'No such file or directory: {path}')
  return found


def _abbreviate(paths, shown=3):
  names = ', '.join(paths[:shown])
  return names if len(paths) <= shown else f'{names} and {len(paths) - shown} more'


def _batches(paths, batch_size, max_message_bytes):
  """Reads files into batches of (path, bytes or Failure) whose image bytes fit in one request."""
  budget = max_message_bytes - _REQUEST_OVERHEAD_BYTES
  batch, size = [], 0
  for path in paths:
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except OSError as e:
      data = Failure(path, 'READ_ERROR', str(e))
    cost = 0 if isinstance(data, Failure) else len(data) + _PER_IMAGE_OVERHEAD_BYTES
    if batch and (len(batch) == batch_size or size + cost > budget):
      yield batch
      batch, size = [], 0
    batch.append((path, data))
    size += cost
  if batch:
    yield batch


def _escape_path(path):
  """The path with backslash, tab, newline and carriage return escaped, for one unambiguous text line."""
  return (path.replace('\\', '\\\\').replace('\t', '\\t').replace('\n', '\\n')
          .replace('\r', '\\r'))


def _format(result, output_format, top_k=1, map_files=None):
  """One output line for a Caption (with the paths of its attention maps, if written) or (jsonl only) a Failure."""
  top = list(zip(result.top_captions, result.top_log_probabilities))[:top_k] if top_k > 1 else []
  if output_format == 'jsonl':
    if isinstance(result, Failure):
      return json.dumps({'path': result.path, 'error': {'code': result.code, 'message': result.message}})
    line = {'path': result.path, 'caption': result.caption, 'log_probability': result.log_probability,
            'model_version': result.model_version}
    if top_k > 1:
      line['top_captions'] = [{'caption': c, 'log_probability': p} for c, p in top]
    if map_files is not None:
      line['attention_maps'] = map_files
    return json.dumps(line)
  pairs = top or [(result.caption, result.log_probability)]
  return '\t'.join([_escape_path(result.path)] + [f'{c}\t{p:.6f}' for c, p in pairs])


def _positive_int(text):
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
  return value


def _parse_args(argv):
  parser = argparse.ArgumentParser(prog='python -m serving.client', description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('paths', nargs='+', help='Image files and/or folders (searched recursively).')
  parser.add_argument('--server', default='localhost:8500',
                      help='host:port of the gRPC endpoint (of the REST one with --protocol rest, e.g. localhost:8501).')
  parser.add_argument('--protocol', choices=PROTOCOLS, default='grpc', help='TF Serving\'s gRPC or REST API.')
  parser.add_argument('--model_name', default=names.MODEL_NAME, help='Name the server serves it under.')
  choice = parser.add_mutually_exclusive_group()
  choice.add_argument('--model_version', type=int, help='Version to ask for (default: the newest).')
  choice.add_argument('--version_label', help='Version label to ask for (TF Serving\'s version_labels).')
  parser.add_argument('--signature_name', default=names.CAPTION_SIGNATURE, choices=sorted(caption_signatures.INPUT_OF_SIGNATURE),
                      help='Image bytes in, or tf.Examples holding them.')
  parser.add_argument('--batch_size', type=_positive_int, default=caption_signatures.DEFAULT_BATCH_SIZE,
                      help='Images per request.')
  parser.add_argument('--top_k', type=_positive_int, default=1,
                      help='Print the k best captions of the beam search (at most the beam width).')
  parser.add_argument('--timeout', type=float, default=30.0, help='Deadline of each call, in seconds.')
  parser.add_argument('--max_attempts', type=int, default=5, help='Calls per request while UNAVAILABLE.')
  parser.add_argument('--max_message_bytes', type=int, default=names.MAX_MESSAGE_BYTES,
                      help='Largest request or response.')
  parser.add_argument('--format', choices=('text', 'jsonl'), default='text', dest='output_format',
                      help='path<TAB>caption<TAB>log_probability lines (tab, newline, backslash in the path '
                           'escaped), or JSON objects.')
  parser.add_argument('--no_progress', action='store_true', help='No progress bar for folders.')
  parser.add_argument('--attention_maps', metavar='DIR',
                      help='Also write, per image, a PNG per word of where an attention model looked '
                           '(<image stem>-<t>-<word>.png); fails if the model has no attention output.')
  return parser.parse_args(argv)


def main(argv=None, stdout=None):
  """The command line; returns the exit status (0 ok, 1 some image or the run failed)."""
  args = _parse_args(argv)
  stdout = stdout or sys.stdout
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
  try:
    paths = find_images(args.paths)
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  if not paths:
    print(f'error: no images ({", ".join(IMAGE_EXTENSIONS)}) under {", ".join(args.paths)}', file=sys.stderr)
    return 1
  progress = not args.no_progress and any(os.path.isdir(path) for path in args.paths)
  failures = 0
  writer = AttentionMapWriter(args.attention_maps) if args.attention_maps else None
  required_outputs = (names.ATTENTION_OUTPUT,) if writer else ()
  with CaptionClient(args.server, args.model_name, protocol=args.protocol, version=args.model_version,
                     version_label=args.version_label,
                     signature_name=args.signature_name, timeout_s=args.timeout, max_attempts=args.max_attempts,
                     max_message_bytes=args.max_message_bytes) as client:
    try:
      for result in client.caption_files(paths, batch_size=args.batch_size, progress=progress,
                                         required_outputs=required_outputs):
        if isinstance(result, Failure):
          failures += 1
          if args.output_format == 'text':
            message = ' '.join(result.message.split())  # one line per failed image
            print(f'error: {_escape_path(result.path)}: {result.code}: {message}', file=sys.stderr)
            continue
        map_files = None
        if writer is not None and not isinstance(result, Failure):
          try:
            map_files = writer.write(result)
          except ValueError as e:
            failures += 1
            print(f'error: {e}', file=sys.stderr)
        print(_format(result, args.output_format, args.top_k, map_files), file=stdout, flush=True)
    except RequestError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
  if failures:
    print(f'error: {failures} of {len(paths)} images got no caption' + (' or no attention maps' if writer else ''),
          file=sys.stderr)
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
