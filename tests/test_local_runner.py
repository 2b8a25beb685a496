"""The local runner as a person runs it: short output, seeded results, resumable after a kill.

Three tiny runs of `python -m pipeline.local.runner` as separate processes
(40 images of 32 px, 3 epochs), so the output checked is the whole output a
terminal would show, interpreter shut-down included:
  fresh    a complete run;
  killed   the same flags and seed in another folder, killed (SIGKILL, by the
           test-only hook in components/training/callbacks.py) right after the
           first Trainer's epoch 2, as a crash or `kill -9` would;
  resumed  the killed folder run again with the same command.
`fresh` and `killed` run side by side to save wall time. A fourth, in this
process, fails in its first component.
"""
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys

import pytest
import tensorflow as tf
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import config as config_lib
from components import names
from components.evaluation import caption_metrics
from components.ingestion import shapes_dataset
from components.training import callbacks
from pipeline.local import run as local_run
from pipeline.local import runner as local_runner

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TINY_RUN = ['--num_images', '40', '--image_size', '32', '--epochs', '3', '--lstm_units', '16',
             '--batch_size', '16', '--beam_width', '2', '--min_bleu4', '0', '--min_cider', '0',
             '--min_baseline_ratio', '0', '--min_distinct_caption_share', '0', '--seed', '7']
_NODES = [names.EXAMPLE_GEN, names.STATISTICS_GEN, names.SCHEMA_GEN, names.EXAMPLE_VALIDATOR,
          names.TRANSFORM, names.CAPTION_TRAINER, names.BASELINE_TRAINER,
          names.LATEST_BLESSED_MODEL_RESOLVER, names.CAPTION_EVALUATOR, names.PUSHER,
          names.DEMO_GALLERY]
_UPSTREAM_OF_TRAINERS = [names.EXAMPLE_GEN, names.STATISTICS_GEN, names.SCHEMA_GEN, names.TRANSFORM]
# The first Trainer LocalDagRunner runs (pipeline order puts the baseline first).
_KILLED_TRAINER = names.BASELINE_TRAINER
_KILL_AFTER_EPOCH = 2


def _start(output_dir, kill_after_epoch=None):
  env = dict(os.environ)
  env.pop(callbacks.KILL_AFTER_EPOCH_ENV, None)
  if kill_after_epoch:
    env[callbacks.KILL_AFTER_EPOCH_ENV] = str(kill_after_epoch)
  return subprocess.Popen(
      [sys.executable, '-m', 'pipeline.local.runner', '--output_dir', output_dir] + _TINY_RUN,
      cwd=_REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process):
  output, _ = process.communicate(timeout=1800)
  return process.returncode, output


def _store(output_dir):
  return metadata_store.MetadataStore(local_run.RunOutputs(output_dir).connection_config)


def _executions(output_dir, node_id):
  store = _store(output_dir)
  context = store.get_context_by_type_and_name('node', f'{names.PIPELINE_NAME}.{node_id}')
  return sorted(store.get_executions_by_context(context.id), key=lambda e: e.id) if context else []


def _pushed_model_answers(output_dir):
  """(caption, log-probability to 4 decimals) of the pushed model for the dataset's first images."""
  model = tf.saved_model.load(_summary(output_dir)['pushed_model'])
  images = sorted(glob.glob(os.path.join(output_dir, 'data', 'shapes', 'Flicker8k_Dataset', '*.jpg')))[:6]
  outputs = model.signatures[names.CAPTION_SIGNATURE](
      **{names.IMAGES_INPUT: tf.constant([open(path, 'rb').read() for path in images])})
  return [(caption, round(float(log_probability), 4)) for caption, log_probability in zip(
      outputs[names.CAPTION_OUTPUT].numpy(), outputs[names.LOG_PROBABILITY_OUTPUT].numpy())]


def _line_about(output, node, words):
  """The console line saying how `node` ended ('[ n/N] node started, ran in ...' or on its own)."""
  return [line for line in output.split('\n') if f'] {node} ' in line and words in line]


def _backups(output_dir):
  """Glob pattern of the killed Trainer's training backups (callbacks.backup_dir)."""
  return os.path.join(output_dir, 'pipeline_root', _KILLED_TRAINER, 'model_run',
                      callbacks.BACKUP_DIR_NAME, '*')


def _summary(output_dir):
  with open(local_run.RunOutputs(output_dir).summary_path) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  fresh_dir = str(tmp_path_factory.mktemp('fresh'))
  killed_dir = str(tmp_path_factory.mktemp('killed'))
  fresh, killed = _start(fresh_dir), _start(killed_dir, _KILL_AFTER_EPOCH)
  result = {'fresh': (fresh_dir,) + _finish(fresh), 'killed': (killed_dir,) + _finish(killed)}
  # What the kill left behind, before the rerun settles it.
  [killed_execution] = _executions(killed_dir, _KILLED_TRAINER)
  result['left_running'] = killed_execution
  result['backups_after_kill'] = glob.glob(_backups(killed_dir))
  result['resumed'] = (killed_dir,) + _finish(_start(killed_dir))
  return result


def test_a_run_prints_a_short_progress_report_and_no_traceback(runs):
  output_dir, code, output = runs['fresh']
  assert code == 0, output
  lines = output.rstrip('\n').split('\n')
  assert len(lines) < 60, output
  assert 'Traceback' not in output and 'Exception ignored' not in output, output
  for node in _NODES:
    assert f'{node} started' in output, node
    assert _line_about(output, node, ' ran in '), node
  assert f'{names.CAPTION_TRAINER} epoch 3/3: loss' in output
  assert 'Seed 7' in output
  # Everything else is on record in the run's log.
  [log_path] = glob.glob(os.path.join(output_dir, 'logs', 'run-*.log'))
  assert f'Full log: {log_path}' in output
  with open(log_path) as f:
    log = f.read()
  assert f'Component {names.TRANSFORM} is running.' in log  # TFX's absl INFO line
  # ... up to the last node: no component's logging set-up took the log file away.
  assert f'Component {names.DEMO_GALLERY} is finished.' in log
  assert 'tensorflow' in log


def test_the_same_seed_gives_the_same_model_and_metrics(runs):
  fresh_dir, fresh_code, _ = runs['fresh']
  resumed_dir, resumed_code, _ = runs['resumed']
  assert fresh_code == resumed_code == 0
  fresh, resumed = _summary(fresh_dir), _summary(resumed_dir)
  assert fresh['seed'] == resumed['seed'] == 7
  # The captioner was not interrupted in either folder: same data, same seed, same training.
  assert (fresh['training']['captioner']['history']
          == resumed['training']['captioner']['history'])
  assert fresh['evaluation']['captioner']['metrics'] == resumed['evaluation']['captioner']['metrics']
  assert fresh['demo']['shown_model'] == resumed['demo']['shown_model']
  assert caption_metrics.BLEU_4 in fresh['demo']['shown_model']
  # The pushed models answer alike (a tiny model's metrics can all be 0, its captions cannot hide).
  assert _pushed_model_answers(fresh_dir) == _pushed_model_answers(resumed_dir)


def test_a_killed_run_leaves_its_trainer_running_with_a_backup(runs):
  _, code, output = runs['killed']
  assert code == -signal.SIGKILL, output
  assert runs['left_running'].last_known_state == metadata_store_pb2.Execution.RUNNING
  assert len(runs['backups_after_kill']) == 1
  assert f'{_KILLED_TRAINER} epoch {_KILL_AFTER_EPOCH}/3' in output


def test_rerunning_a_killed_run_reuses_the_cache_and_resumes_the_trainer(runs):
  output_dir, code, output = runs['resumed']
  assert code == 0, output
  assert 'Traceback' not in output, output
  for node in _UPSTREAM_OF_TRAINERS:
    assert _line_about(output, node, ' reused from the cache in '), node
    assert [e.last_known_state for e in _executions(output_dir, node)] == [
        metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED]
  assert f'{_KILLED_TRAINER} resumes from its backup after epoch {_KILL_AFTER_EPOCH}' in output
  assert f'{_KILLED_TRAINER} epoch 1/3' not in output
  assert f'{_KILLED_TRAINER} epoch 3/3' in output
  summary = _summary(output_dir)
  assert summary['resumed'] == {'baseline': _KILL_AFTER_EPOCH}
  assert 'the baseline resumed its training after epoch 2' in output
  assert len(summary['training']['baseline']['history']['loss']) == 1  # epoch 3 only
  assert summary['pushed'] is True
  # The backup is gone once training finished.
  assert not glob.glob(_backups(output_dir))


def test_the_killed_execution_is_cancelled_and_its_folders_removed(runs):
  output_dir, _, output = runs['resumed']
  killed_id = runs['left_running'].id
  states = {e.id: e.last_known_state for e in _executions(output_dir, _KILLED_TRAINER)}
  assert states == {killed_id: metadata_store_pb2.Execution.CANCELED,
                    max(states): metadata_store_pb2.Execution.COMPLETE}
  assert f'execution {killed_id} was interrupted' in output
  node_dir = os.path.join(output_dir, 'pipeline_root', _KILLED_TRAINER)
  assert not glob.glob(os.path.join(node_dir, '*', str(killed_id)))
  assert not os.path.exists(os.path.join(node_dir, '.system', 'executor_execution', str(killed_id)))
  store = _store(output_dir)
  active = [e for e in store.get_executions()
            if e.last_known_state in (metadata_store_pb2.Execution.NEW,
                                      metadata_store_pb2.Execution.RUNNING)]
  assert not active
  # Every output folder of the Trainer belongs to an artifact in the store.
  published = {a.uri for a in store.get_artifacts()}
  for folder in glob.glob(os.path.join(node_dir, '*', '[0-9]*')):
    assert folder in published, folder


def test_a_failing_run_ends_with_one_error_line_naming_the_component_and_the_log(tmp_path, capsys):
  data_dir = tmp_path / 'data'
  shapes_dataset.generate(str(data_dir), num_images=8, image_size=32, layout=shapes_dataset.KAGGLE)
  captions = data_dir / shapes_dataset.KAGGLE_CAPTIONS_FILE
  captions.write_text(captions.read_text().split('\n', 1)[1])  # no header: ExampleGen refuses it
  output_dir = tmp_path / 'out'
  assert local_runner.main(['--data_dir', str(data_dir), '--output_dir', str(output_dir)]) == 1
  captured = capsys.readouterr()
  [log_path] = glob.glob(str(output_dir / 'logs' / 'run-*.log'))
  error_lines = captured.err.strip().split('\n')
  assert len(error_lines) == 1, captured.err
  assert error_lines[0].startswith(f'error: {names.EXAMPLE_GEN} failed: ')
  assert 'header' in error_lines[0] and log_path in error_lines[0]
  assert 'Traceback' not in captured.out + captured.err
  with open(log_path) as f:
    assert 'Traceback' in f.read()  # the whole story is on record
  assert not [e for e in _store(str(output_dir)).get_executions()
              if e.last_known_state == metadata_store_pb2.Execution.RUNNING]


def test_real_data_follows_the_published_recipe_and_the_flags_override_either_defaults():
  # Imported here: local_run imports TFX, which local_runner defers until its log is open.
  real = local_run.run_configs(local_runner._parse_args(['--data_dir', '/data/Flickr8k']))
  assert real == (config_lib.TransformConfig(), config_lib.EncoderConfig(), config_lib.TrainerConfig(),
                  config_lib.EvaluationConfig())
  # components/config.py's RECIPE: min word count 5, beam 3, dropout 0.5, Adam at 5e-4 per
  # batch of 32, scaled to 1e-3 per batch of 64.
  assert (real[0].min_word_frequency, real[2].beam_width, real[2].dropout, real[2].learning_rate,
          real[2].batch_size) == (5, 3, 0.5, 1e-3, 64)
  embedded = local_run.run_configs(local_runner._parse_args([]))
  assert embedded == (config_lib.EMBEDDED_TRANSFORM, config_lib.EMBEDDED_ENCODER, config_lib.EMBEDDED_TRAINER,
                      config_lib.EMBEDDED_EVALUATION)
  flags = ['--learning_rate', '2e-4', '--dropout', '0.1', '--embedding_dim', '128',
           '--min_word_frequency', '4', '--batch_size', '8', '--scst_epochs', '3',
           '--decoder_precision', 'bfloat16']
  for argv, (transform, encoder, trainer, evaluation) in (([], embedded),
                                                          (['--data_dir', '/data/Flickr8k'], real)):
    assert local_run.run_configs(local_runner._parse_args(argv + flags)) == (
        dataclasses.replace(transform, min_word_frequency=4),
        encoder,
        dataclasses.replace(trainer, learning_rate=2e-4, dropout=0.1, embedding_dim=128, batch_size=8,
                            scst_epochs=3, decoder_precision='bfloat16'),
        evaluation)
