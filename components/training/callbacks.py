"""What makes a Trainer run reproducible, resumable and visible: seeding and Keras callbacks.

`run_fn` (components/training/trainer.py) calls `make_deterministic(seed)`
first, then fits with `TrainingRun(fn_args).callbacks()` and records
`TrainingRun.resumed_from_epoch` in its training report.

Reproducible: one seed drives Python's, NumPy's and TensorFlow's generators
(weight initialisation, dropout, the tf.data shuffle), and TensorFlow's op
determinism makes the kernels themselves repeatable, so on a CPU the same
inputs and config give the same weights. Each run_fn reseeds, so the
captioner and the baseline trained in one process do not depend on which of
them ran (or came from the cache) first.

Resumable: Keras `BackupAndRestore` saves the weights, the optimizer and the
epoch counter after every epoch and, on the next `fit`, restores them and
continues from the epoch after the last one saved; it deletes the backup once
training ends. State that lives outside the model is not restored: an
interrupted run's EarlyStopping patience starts afresh, and its History (so
the report's loss history) holds only the epochs run after the resume.
"""
import hashlib
import json
import logging
import os
import signal
import time
from typing import List, Optional

import tensorflow as tf
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components import progress

# Test-only: the number of epochs after which the process kills itself
# (SIGKILL, after that epoch's backup), as a machine crash or `kill -9` would.
KILL_AFTER_EPOCH_ENV = 'CAPTIONER_TEST_KILL_AFTER_EPOCH'
# Folder beside the Trainer's model_run folders that holds its training backups.
BACKUP_DIR_NAME = 'training_backup'


def make_deterministic(seed: int) -> None:
  """Seeds every random generator training uses and turns on TensorFlow's op determinism."""
  keras.utils.set_random_seed(seed)
  tf.config.experimental.enable_op_determinism()


def node_id(fn_args: FnArgs) -> str:
  """The Trainer's node id, for progress lines.

  TFX writes each output artifact to `<pipeline_root>/<node id>/<output key>/<execution id>`
  (tfx.orchestration.portable.outputs_utils), so it is two levels above `model_run_dir`.
  """
  return os.path.basename(os.path.dirname(os.path.dirname(os.path.normpath(fn_args.model_run_dir))))


def backup_dir(fn_args: FnArgs) -> str:
  """Where BackupAndRestore keeps this training's state between executions.

  `<folder of model_run_dir>/training_backup/<fingerprint>`: in a TFX run,
  `<pipeline_root>/<node id>/model_run/training_backup/<fingerprint>`. The
  fingerprint hashes the training inputs (the URIs of the transformed
  examples and of the transform graph) and the full TrainerConfig (seed and
  epochs included).

  Why there: TFX gives every execution of a node new output folders
  (`.../model_run/<execution id>`), and its stateful working directory is
  keyed by a UUID stored on the execution, so a re-executed Trainer sees
  neither. The folder that holds every execution's `model_run` folder is the
  same for all executions of the node, and the fingerprint is the same
  exactly when the next execution would train the same model: its upstream
  components came from the cache (same artifacts, same URIs) and its config
  did not change. Any change gives a new fingerprint, so a backup is never
  resumed into a different model. The backup stays inside the run's output
  folder, beside (not inside) the execution folders that
  pipeline/local/interrupted.py removes after a kill, and Keras deletes it when
  training finishes.
  """
  fingerprint = hashlib.sha256(json.dumps({
      'train_files': sorted(fn_args.train_files),
      'eval_files': sorted(fn_args.eval_files),
      'transform_output': fn_args.transform_output,
      'config': fn_args.custom_config,
  }, sort_keys=True).encode('utf-8')).hexdigest()[:16]
  return os.path.join(os.path.dirname(os.path.normpath(fn_args.model_run_dir)), BACKUP_DIR_NAME,
                      fingerprint)


# Seconds between two progress lines within an epoch: an epoch at Flickr8k's
# scale takes minutes on a CPU, and a person watching must see it move; the
# embedded dataset's epochs (seconds) print only their closing line.
IN_EPOCH_INTERVAL_SECONDS = 30.0


def _clock(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  return f'{minutes}:{seconds:02d}'


class EpochLine(keras.callbacks.Callback):
  """One progress line per epoch (loss, val_loss, seconds), and one every
  `interval_seconds` within a long epoch (batches done of the total, time left).

  Also notes the first epoch `fit` runs, which is later than 0 when
  BackupAndRestore resumed an interrupted training.
  """

  def __init__(self, label: str, interval_seconds: float = IN_EPOCH_INTERVAL_SECONDS):
    super().__init__()
    self._label = label
    self._interval = interval_seconds
    self.first_epoch: Optional[int] = None
    self.seconds: List[float] = []  # of every epoch run, in order
    self._start = 0.0
    self._last_line = 0.0
    self._epoch = 0

  def on_epoch_begin(self, epoch: int, logs=None) -> None:
    if self.first_epoch is None:
      self.first_epoch = epoch
      if epoch:
        progress.logger.info('  %s resumes from its backup after epoch %d', self._label, epoch)
    self._epoch = epoch
    self._start = self._last_line = time.monotonic()

  def on_train_batch_end(self, batch: int, logs=None) -> None:
    now = time.monotonic()
    if now - self._last_line < self._interval:
      return
    self._last_line = now
    done, total, elapsed = batch + 1, self.params.get('steps'), now - self._start
    left = f', about {_clock(elapsed / done * (total - done))} left' if total else ''
    progress.logger.info('  %s epoch %d/%d: batch %d/%s, %s%s', self._label, self._epoch + 1,
                         self.params['epochs'], done, total or '?', _clock(elapsed), left)

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    logs = logs or {}
    self.seconds.append(time.monotonic() - self._start)
    progress.logger.info('  %s epoch %d/%d: loss %.4f, val_loss %.4f, %.1f s', self._label,
                         epoch + 1, self.params['epochs'], logs.get('loss', float('nan')),
                         logs.get('val_loss', float('nan')), self.seconds[-1])


class _KillAfterEpoch(keras.callbacks.Callback):
  """Test-only: ends the process without any clean-up once epoch `epoch` is backed up."""

  def __init__(self, epoch: int):
    super().__init__()
    self._epoch = epoch

  def on_epoch_end(self, epoch: int, logs=None) -> None:
    if epoch + 1 == self._epoch:
      logging.warning('%s=%d: killing the process after epoch %d', KILL_AFTER_EPOCH_ENV,
                      self._epoch, self._epoch)
      logging.shutdown()  # flush the run's log before the process disappears
      os.kill(os.getpid(), signal.SIGKILL)


class TrainingRun:
  """The callbacks one Trainer execution fits with, and what they observed."""

  def __init__(self, fn_args: FnArgs):
    self._epoch_line = EpochLine(node_id(fn_args))
    self._backup_dir = backup_dir(fn_args)
    self._backup = keras.callbacks.BackupAndRestore(self._backup_dir)
    # Keras deletes the checkpoint inside the backup folder when training ends;
    # the folders around it go too, so a finished training leaves nothing behind.
    self._tidy = keras.callbacks.LambdaCallback(on_train_end=lambda logs: self._remove_backup_dir())
    kill_after = os.environ.get(KILL_AFTER_EPOCH_ENV)
    self._kill = _KillAfterEpoch(int(kill_after)) if kill_after else None

  def callbacks(self) -> List[keras.callbacks.Callback]:
    """To append after the Trainer's own callbacks; the kill hook comes after the backup."""
    return [c for c in (self._backup, self._tidy, self._epoch_line, self._kill) if c]

  def _remove_backup_dir(self) -> None:
    tf.io.gfile.rmtree(self._backup_dir)
    parent = os.path.dirname(self._backup_dir)
    if not tf.io.gfile.listdir(parent):  # no other configuration's backup is waiting there
      tf.io.gfile.rmtree(parent)

  @property
  def resumed_from_epoch(self) -> int:
    """Epochs restored from a backup (0 for a fresh training), known once `fit` has begun."""
    return self._epoch_line.first_epoch or 0

  @property
  def epoch_seconds(self) -> List[float]:
    """Seconds of every epoch `fit` ran (validation included), in order."""
    return list(self._epoch_line.seconds)
