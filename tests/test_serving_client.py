"""serving/client.py without a server: what it imports, its command line, how it batches files.

Captioning through a server, over gRPC and REST, is in tests/test_serving.py.
"""
import os
import subprocess
import sys

import pytest

from serving import client as client_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a TF Serving client does not need; importing any of them printed ~50 lines of warnings and took 12 s.
HEAVY = ('tensorflow', 'tfx', 'apache_beam', 'tf_keras', 'tensorflow_serving', 'components.evaluation',
         'components.encoder', 'components.training')


def _python(code):
  return subprocess.run([sys.executable, '-c', code], cwd=_REPO, capture_output=True, text=True, check=True)


def test_help_prints_only_the_usage_and_imports_nothing_heavy(tmp_path):
  """`python -m serving.client --help` as a person runs it (no PYTHONWARNINGS or TF_CPP_MIN_LOG_LEVEL from the
  test run), then the modules it imported."""
  env = {key: value for key, value in os.environ.items() if key not in ('PYTHONWARNINGS', 'TF_CPP_MIN_LOG_LEVEL')}
  modules_file = tmp_path / 'modules.txt'
  code = ('import runpy, sys\n'
          'sys.argv = ["serving.client", "--help"]\n'
          'try:\n  runpy.run_module("serving.client", run_name="__main__", alter_sys=True)\n'
          'finally:\n'
          f'  open({str(modules_file)!r}, "w").write("\\n".join(sys.modules))\n')

  result = subprocess.run([sys.executable, '-c', code], cwd=_REPO, capture_output=True, text=True, env=env)

  assert result.returncode == 0 and result.stderr == '', result.stderr
  assert result.stdout.startswith('usage: python -m serving.client')
  assert not [m for m in modules_file.read_text().split() if m.startswith(HEAVY)]


def test_rest_client_imports_no_tensorflow():
  """Building a REST client and calling it (here against a closed port) imports no TensorFlow."""
  result = _python('import sys\n'
                   'from serving import client\n'
                   'with client.CaptionClient("127.0.0.1:1", "captioner", protocol="rest", max_attempts=1) as c:\n'
                   '  try:\n    c.check_signature()\n  except client.RequestError as e:\n    print(e.code.name)\n'
                   'print([m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_serving")])')
  assert result.stdout.split('\n')[:2] == ['UNAVAILABLE', '[]']


def test_client_packs_batches_under_the_message_limit(tmp_path):
  paths = []
  for i, size in enumerate([400, 400, 400, 50]):
    path = tmp_path / f'{i}.png'
    path.write_bytes(b'x' * size)
    paths.append(str(path))

  batches = list(client_lib._batches(paths, batch_size=3, max_message_bytes=4096 + 1000))

  assert [[os.path.basename(p) for p, _ in batch] for batch in batches] == [['0.png', '1.png'], ['2.png', '3.png']]


def test_client_batch_size_zero_is_a_usage_error(capsys):
  with pytest.raises(SystemExit) as exit_info:
    client_lib.main(['photo.jpg', '--batch_size', '0'])
  assert exit_info.value.code == 2
  assert 'argument --batch_size: must be at least 1, got 0' in capsys.readouterr().err


def test_find_images_expands_folders_in_order_and_names_a_missing_path(tmp_path):
  (tmp_path / 'b').mkdir()
  for name in ('b/2.JPG', 'b/notes.txt', '1.png', 'a.gif'):
    (tmp_path / name).write_bytes(b'x')

  assert client_lib.find_images([str(tmp_path)]) == [str(tmp_path / n) for n in ('1.png', 'a.gif', 'b/2.JPG')]
  with pytest.raises(FileNotFoundError, match='nope.jpg'):
    client_lib.find_images([str(tmp_path / 'nope.jpg')])
