"""Fixtures shared by the test modules; helpers shared with the benches live in testing/."""
import pathlib

import pytest

from testing import tiny_model


@pytest.fixture(scope='session')
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
  """The tiny random captioner (testing.tiny_model, defaults), exported once per session.

  Read-only: a test that needs it in a layout of its own (a serving base
  directory, a Model artifact) copies it there.
  """
  return pathlib.Path(tiny_model.export_tiny_model(str(tmp_path_factory.mktemp('tiny_model') / 'saved_model')))
