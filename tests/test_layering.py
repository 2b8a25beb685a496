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


def _imported_modules(path: pathlib.Path):
  """(line, top-level module name) of every absolute import in the file."""
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      yield from ((node.lineno, alias.name.split('.')[0]) for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      yield node.lineno, node.module.split('.')[0]


def _imported_packages(path: pathlib.Path):
  """(line, top-level project package) for every import of a project package in the file."""
  return [(line, top) for line, top in _imported_modules(path) if top in _PACKAGES]


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
  test_modules = {p.stem for p in (_REPO / 'tests').glob('*.py')} | {'tests'}
  shared = [f'{p.relative_to(_REPO)}:{line} imports {module}'
            for p in (_REPO / 'tests').glob('*.py') for line, module in _imported_modules(p)
            if module in test_modules]
  assert not shared, 'tests share code through testing/ and tests/conftest.py, not each other: ' + \
      ', '.join(shared)
