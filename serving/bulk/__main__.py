"""The command line of the bulk captioner (serving/bulk/job.py).

    python -m serving.bulk --input photos/ --model outputs/serving/captioner --output captions/ [--top_k 3]
        [Beam arguments, e.g. --runner DataflowRunner --project P --region R --temp_location gs://B/tmp
         --setup_file ./setup.py]

The terminal shows progress every 30 s (images done of the total, images/s,
time left), the summary line and errors, one line each; the log file
(--log_file) gets the same and everything else: Beam's, TensorFlow's and
libjpeg's output. Descriptor 2 points at the log before TensorFlow is imported
(as in serving/server.py), which is why this module imports only the
standard library until then. Exit status 0 when every input is in the
captions or the rejects; 1 on a bad --input or --model, or lost output.
"""
import argparse
import datetime
import logging
import os
import sys
import time

from components import progress
from serving import server as server_cli

# Seconds between two progress lines on the terminal and in the log.
PROGRESS_INTERVAL_SECONDS = 30.0
_LOG = logging.getLogger('captioner.bulk')
_LOG_FORMAT = '%(asctime)s %(levelname)s %(name)s: %(message)s'


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}'


class EveryInterval(logging.Filter):
  """Lets a loop's progress record through every `interval` seconds and at its end, as one line:
  done of total, images/s, time left."""

  def __init__(self, interval: float, clock=time.monotonic):
    super().__init__()
    self._interval, self._clock = interval, clock
    self._last = clock()

  def filter(self, record: logging.LogRecord) -> bool:
    state = getattr(record, 'progress', None)
    if state is None:
      return True
    now = self._clock()
    if not state.finished and now - self._last < self._interval:
      return False
    self._last = now
    rate = state.done / max(state.elapsed, 1e-9)
    left = (f', {_duration((state.total - state.done) / rate)} left' if state.total and rate > 0
            and not state.finished else '')
    of_total = f'/{state.total} ({100 * state.done / state.total:.0f}%)' if state.total else ''
    record.msg, record.args = (f'{state.description}: {state.done}{of_total} {state.unit}s, '
                               f'{rate:.1f} {state.unit}s/s{left}'), ()
    return True


def _parse_args(argv):
  parser = argparse.ArgumentParser(prog='python -m serving.bulk', description=__doc__.split('\n\n')[0],
                                   epilog='Other arguments go to Beam (the DirectRunner in this process '
                                          'by default; see docs/bulk.md for Dataflow and Flink).')
  parser.add_argument('--input', required=True,
                      help='A folder (every file under it), a glob (local or gs://), an image file, or a '
                           'text file of paths, one a line.')
  parser.add_argument('--model', required=True,
                      help='A TF Serving base folder (e.g. outputs/serving/captioner: its newest numeric '
                           'version) or a version folder holding saved_model.pb.')
  parser.add_argument('--output', required=True,
                      help='Folder or bucket path for captions-*.jsonl and rejects-*.jsonl; a rerun over '
                           'it skips what was captioned with the same model version.')
  parser.add_argument('--top_k', type=int, default=1,
                      help='Captions per image in the "captions" field, best first (at most the model\'s '
                           'beam width; default %(default)s).')
  parser.add_argument('--commit_every', type=int, default=0,
                      help='Images per Beam run, each committing its own files, so that a killed job loses '
                           'at most one part (default: one run for all; each part loads the model again).')
  parser.add_argument('--batch_size', type=int, default=None, help='Images per model call (default 32).')
  parser.add_argument('--log_file', default='',
                      help='The log (default: outputs/logs/bulk-<UTC time>.log under the current folder).')
  return parser.parse_known_args(argv)


def _logging_to(terminal, log_file: str) -> None:
  """Root logger: everything to `log_file`; the job's own lines and errors to `terminal` too."""
  file_handler = logging.FileHandler(log_file)
  terminal_handler = logging.StreamHandler(terminal)
  terminal_handler.addFilter(lambda r: r.name.startswith('captioner.') or r.levelno >= logging.ERROR)
  terminal_handler.setFormatter(logging.Formatter('%(message)s'))
  file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
  root = logging.getLogger()
  root.handlers = [file_handler, terminal_handler]
  root.setLevel(logging.INFO)
  progress.logger.addFilter(EveryInterval(PROGRESS_INTERVAL_SECONDS))


def main(argv=None) -> int:
  args, beam_args = _parse_args(argv)
  log_file = args.log_file or os.path.join(
      'outputs', 'logs', f'bulk-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}.log')
  os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
  terminal = server_cli.send_library_output_to(log_file)
  _logging_to(terminal, log_file)
  logging.info('Bulk captioning; this log: %s', log_file)  # the log file only: the terminal keeps one line per event
  from serving.bulk import inputs  # pylint: disable=import-outside-toplevel; they import TensorFlow: see above
  from serving.bulk import job  # pylint: disable=import-outside-toplevel
  options = {} if args.batch_size is None else {'batch_size': args.batch_size}
  try:
    summary = job.run(args.input, args.model, args.output, beam_args, top_k=args.top_k,
                          commit_every=args.commit_every, **options)
  except (inputs.InputError, job.LostOutputError) as e:
    _LOG.error('error: %s', e)
    return 1
  except Exception as e:  # pylint: disable=broad-except; one line on the terminal, the traceback in the log
    logging.getLogger().handlers[0].handle(logging.makeLogRecord(
        {'msg': 'bulk run failed', 'levelno': logging.ERROR, 'levelname': 'ERROR', 'exc_info': sys.exc_info()}))
    _LOG.error('error: %s: %s (traceback in %s)', type(e).__name__, e, log_file)
    return 1
  _LOG.info('%s (log: %s)', summary.line(), log_file)
  return 0


if __name__ == '__main__':
  sys.exit(main())
