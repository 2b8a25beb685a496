"""The bulk captioner (serving.bulk) run for real on the DirectRunner over the tiny SavedModel.

Every input must land in exactly one of captions-*.jsonl and rejects-*.jsonl,
bad files with the ingestion's reasons (components/ingestion/rules.py); a
rerun skips what was captioned; a killed run loses nothing; a bad model fails
with one line.
"""
import collections
import json
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components import names
from components.ingestion import rules
from components import progress
from serving.bulk import __main__ as bulk_main
from serving.bulk import inputs
from serving.bulk import job
from testing import images

_REPO = pathlib.Path(__file__).resolve().parents[1]
TOP_K = 2  # testing.tiny_model's beam width


@pytest.fixture(scope='module')
def model_base(tiny_model_dir, tmp_path_factory):
  """A TF Serving base folder holding the tiny model as version 3."""
  base = tmp_path_factory.mktemp('serving') / 'captioner'
  shutil.copytree(tiny_model_dir, base / '3')
  return base


def _jpeg_claiming(width, height):
  """A small real JPEG whose start-of-frame marker claims width x height (no pixels allocated)."""
  data = bytearray(images.block_image(0, (16, 16), 'JPEG'))
  sof = data.index(b'\xff\xc0')  # SOF0: marker, length (2), precision (1), height (2), width (2)
  data[sof + 5:sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
  return bytes(data)


def _write_photos(folder, count, size=(40, 30)):
  folder.mkdir(parents=True, exist_ok=True)
  paths = []
  for seed in range(count):
    paths.append(folder / f'photo{seed:04d}.jpg')
    paths[-1].write_bytes(images.block_image(seed, size, 'JPEG'))
  return [str(p) for p in paths]


def _lines(output, prefix):
  return list(inputs.read_lines(inputs.output_files(str(output), prefix)))


def _by_path(lines):
  counts = collections.Counter(line[inputs.PATH_FIELD] for line in lines)
  assert max(counts.values(), default=1) == 1, [p for p, c in counts.items() if c > 1]
  return {line[inputs.PATH_FIELD]: line for line in lines}


def _call_model(version_dir, encoded):
  signature = tf.saved_model.load(str(version_dir)).signatures[names.CAPTION_SIGNATURE]
  outputs = signature(**{names.IMAGES_INPUT: tf.constant(encoded)})
  return ([c.decode() for c in outputs[names.CAPTION_OUTPUT].numpy()],
          outputs[names.LOG_PROBABILITY_OUTPUT].numpy())


def test_bad_inputs_are_rejected_with_their_reason_and_the_rest_captioned(model_base, tmp_path):
  photos = tmp_path / 'photos'
  good = _write_photos(photos, 5)
  rgba = np.zeros((24, 32, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 90  # red, mostly transparent
  (photos / 'alpha.png').write_bytes(images.encode(Image.fromarray(rgba, 'RGBA'), 'PNG'))
  (photos / 'rgb.png').write_bytes(images.encode(Image.fromarray(rgba[..., :3], 'RGB'), 'PNG'))
  whole = images.block_image(7, (64, 48), 'JPEG')
  bad = {
      'truncated.jpg': (whole[:len(whole) // 2], rules.NOT_AN_IMAGE),
      'notes.jpg': (b'not an image at all\n', rules.NOT_AN_IMAGE),
      'empty.jpg': (b'', rules.NOT_AN_IMAGE),
      'huge.jpg': (_jpeg_claiming(20_000, 20_000), rules.IMAGE_TOO_LARGE),
  }
  for name, (data, _) in bad.items():
    (photos / name).write_bytes(data)
  locked = tmp_path / 'locked.jpg'
  locked.write_bytes(images.block_image(9, (40, 30), 'JPEG'))
  locked.chmod(0)
  listing = tmp_path / 'list.txt'
  listing.write_text('\n'.join([str(photos), str(tmp_path / 'missing.jpg'), str(locked), '',
                                *sorted(str(p) for p in photos.iterdir())]) + '\n')
  output = tmp_path / 'out'

  summary = job.run(str(listing), str(model_base), str(output), top_k=TOP_K, batch_size=4)

  captions, rejects = _by_path(_lines(output, 'captions')), _by_path(_lines(output, 'rejects'))
  reasons = {path: line['reason'] for path, line in rejects.items()}
  root_reads_anything = os.geteuid() == 0  # root reads a mode-000 file; anyone else is denied
  expected_rejects = {str(photos / name): reason for name, (_, reason) in bad.items()}
  expected_rejects.update({str(tmp_path / 'missing.jpg'): rules.UNREADABLE_IMAGE,
                           str(photos): rules.UNREADABLE_IMAGE})  # a folder named in the list
  if not root_reads_anything:
    expected_rejects[str(locked)] = rules.UNREADABLE_IMAGE
  assert reasons == expected_rejects
  assert '20000x20000' in rejects[str(photos / 'huge.jpg')]['detail']
  assert all(line['detail'] for line in rejects.values())
  expected_captioned = set(good) | {str(photos / 'alpha.png'), str(photos / 'rgb.png')}
  if root_reads_anything:
    expected_captioned.add(str(locked))
  assert set(captions) == expected_captioned
  assert (summary.captioned, summary.rejected, summary.skipped) == (len(expected_captioned), len(reasons), 0)
  assert {line[inputs.MODEL_VERSION_FIELD] for line in [*captions.values(), *rejects.values()]} == {'3'}
  # Alpha is dropped, as the serving graph and the ingestion's check drop it: the same caption as RGB.
  assert captions[str(photos / 'alpha.png')]['caption'] == captions[str(photos / 'rgb.png')]['caption']
  assert captions[str(photos / 'alpha.png')]['log_probability'] == pytest.approx(
      captions[str(photos / 'rgb.png')]['log_probability'])
  # What the job wrote is what the SavedModel says for each image, whatever batch it rode in.
  texts, log_probabilities = _call_model(model_base / '3', [pathlib.Path(p).read_bytes() for p in good])
  assert [captions[p]['caption'] for p in good] == texts
  np.testing.assert_allclose([captions[p]['log_probability'] for p in good], log_probabilities, rtol=1e-5)
  for line in captions.values():
    assert 1 <= len(line['captions']) <= TOP_K and line['captions'][0] == line['caption']
    assert line['log_probabilities'][0] == line['log_probability']


def test_rerun_skips_what_was_captioned_with_the_same_model_version(model_base, tmp_path):
  paths = _write_photos(tmp_path / 'photos', 12)
  (tmp_path / 'photos' / 'broken.jpg').write_bytes(b'\xff\xd8\xff broken')
  first_half = tmp_path / 'half.txt'
  first_half.write_text('\n'.join(paths[:6]) + '\n')
  output = tmp_path / 'out'

  first = job.run(str(first_half), str(model_base), str(output))
  second = job.run(str(tmp_path / 'photos'), str(model_base), str(output))
  third = job.run(str(tmp_path / 'photos'), str(model_base), str(output))

  assert (first.captioned, first.rejected, first.skipped) == (6, 0, 0)
  assert (second.captioned, second.rejected, second.skipped) == (6, 1, 6)
  assert (third.captioned, third.rejected, third.skipped) == (0, 1, 12)  # a reject is tried again
  assert set(_by_path(_lines(output, 'captions'))) == set(paths)
  assert len(inputs.output_files(str(output), 'captions')) == 3  # one shard set per run
  # Another model version captions everything again.
  other = tmp_path / 'other' / 'captioner'
  shutil.copytree(model_base / '3', other / '4')
  fourth = job.run(str(tmp_path / 'photos'), str(other), str(output))
  assert (fourth.captioned, fourth.skipped, fourth.model_version) == (12, 0, '4')


def test_a_killed_run_loses_nothing(model_base, tmp_path):
  paths = _write_photos(tmp_path / 'photos', 300, size=(32, 32))
  output, log = tmp_path / 'out', tmp_path / 'killed.log'
  process = subprocess.Popen(
      [sys.executable, '-m', 'serving.bulk', '--input', str(tmp_path / 'photos'), '--model', str(model_base),
       '--output', str(output), '--batch_size', '4', '--commit_every', '100', '--log_file', str(log)],
      cwd=_REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  give_up = time.monotonic() + 240
  # Killed once the first part has committed its files and the second is captioning.
  while not (inputs.output_files(str(output), 'captions') and list(output.glob('beam-temp-captions-*/*'))):
    assert process.poll() is None and time.monotonic() < give_up, 'the job did not get to its second part'
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  assert process.wait() == -signal.SIGKILL
  committed = [list(inputs.read_lines([path])) for path in inputs.output_files(str(output), 'captions')]
  assert [len(lines) for lines in committed] in ([100], [100, 100])  # whole parts only, nothing half-written

  rerun = job.run(str(tmp_path / 'photos'), str(model_base), str(output))

  assert (rerun.skipped, rerun.captioned) == (100 * len(committed), len(paths) - 100 * len(committed))
  assert set(_by_path(_lines(output, 'captions'))) == set(paths)
  assert not _lines(output, 'rejects')


def test_model_folder_without_a_version_fails_at_once_with_one_line(tmp_path):
  (tmp_path / 'captioner' / 'not-a-version').mkdir(parents=True)
  result = subprocess.run(
      [sys.executable, '-m', 'serving.bulk', '--input', str(tmp_path), '--model', str(tmp_path / 'captioner'),
       '--output', str(tmp_path / 'out'), '--log_file', str(tmp_path / 'bulk.log')],
      cwd=_REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      f'error: --model {tmp_path / "captioner"}: no model version there (a numeric folder holding '
      f'saved_model.pb), and not a SavedModel folder itself']


def test_saved_model_without_the_caption_signature_is_refused(tmp_path):
  module = tf.Module()
  module.f = tf.function(lambda x: {'y': x * 2.0}, input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(tmp_path / 'captioner' / '1'), signatures={'serving_default': module.f})
  with pytest.raises(inputs.InputError, match='has no caption signature .serving_default.*missing images, '
                                              'caption, log_probability, captions, log_probabilities'):
    job.run(str(tmp_path), str(tmp_path / 'captioner'), str(tmp_path / 'out'))
  assert not (tmp_path / 'out').exists()


def test_progress_lines_every_interval_with_rate_and_time_left():
  now = [0.0]
  every = bulk_main.EveryInterval(30.0, clock=lambda: now[0])

  def record(at, done, finished=False):
    now[0] = at
    state = progress.Progress('bulk captioning', done, 1000, at, 'image', finished)
    item = logging.LogRecord('captioner.progress', logging.INFO, __file__, 0, 'raw', (), None)
    item.progress = state
    return item.getMessage() if every.filter(item) else None

  assert record(1.0, 10) is None
  assert record(29.0, 290) is None
  assert record(30.0, 300) == 'bulk captioning: 300/1000 (30%) images, 10.0 images/s, 0:01:10 left'
  assert record(45.0, 450) is None
  assert record(50.0, 1000, finished=True) == 'bulk captioning: 1000/1000 (100%) images, 20.0 images/s'


def test_direct_runner_runs_in_process_unless_told_otherwise():
  """Images pass between stages: the DirectRunner runs in memory, another runner or mode is kept as given."""
  def options(args, drop_default=False):
    return job.beam_options(args).get_all_options(drop_default=drop_default)

  assert (options([])['direct_running_mode'], options([])['direct_num_workers']) == ('in_memory', 1)
  assert options(['--direct_running_mode=multi_threading'])['direct_running_mode'] == 'multi_threading'
  assert 'direct_running_mode' not in options(['--runner=DataflowRunner'], drop_default=True)
