"""Dependencies point one way: components/ at the bottom, then pipeline/ and serving/, then bench/ and tests/.

Reads every module's import statements (nothing is imported), so a module that
reaches up a layer fails here even if no test happens to execute it.
"""
import ast
import pathlib

import pytest

_REPO = pathlib.Path(__file__).resolve().parents[1]
_PACKAGES = ('components', 'pipeline', 'serving', 'bench', 'testing', 'tests')
# What each package may import of the project's own packages.
_ALLOWED = {
    'components': {'components'},
    'pipeline': {'components', 'pipeline'},
    'serving': {'components', 'serving'},
    'testing': {'components', 'pipeline', 'serving', 'testing'},
    'bench': {'components', 'pipeline', 'serving', 'testing', 'bench'},
    'tests': {'components', 'pipeline', 'serving', 'testing'},
}


def _imported_packages(path: pathlib.Path):
  """(line, top-level project package) for every import in the file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      modules = [node.module]
    else:
      continue
    for module in modules:
      top = module.split('.')[0]
      if top in _PACKAGES:
        yield node.lineno, top


def _modules():
  return sorted(p for package in _PACKAGES for p in (_REPO / package).rglob('*.py'))


def test_every_package_is_checked():
  found = {p.relative_to(_REPO).parts[0] for p in _modules()}
  assert found == set(_ALLOWED), found


@pytest.mark.parametrize('path', _modules(), ids=lambda p: str(p.relative_to(_REPO)))
def test_imports_point_down(path):
  package = path.relative_to(_REPO).parts[0]
  upward = [f'{path.relative_to(_REPO)}:{line} imports {top}'
            for line, top in _imported_packages(path) if top not in _ALLOWED[package]]
  assert not upward, '\n'.join(upward)


def test_tests_do_not_import_each_other():
  shared = [f'{p.relative_to(_REPO)}:{line}'
            for p in (_REPO / 'tests').glob('*.py') for line, top in _imported_packages(p)
            if top == 'tests']
  assert not shared, 'tests share code through testing/ and tests/conftest.py, not each other: ' + \
      ', '.join(shared)
