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
  """(line, top-level module name) for every absolute import in the file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from ((node.lineno, alias.name.split('.')[0]) for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      modules = [node.module]
    else:
      continue
    for module in modules:
      yield node.lineno, module.split('.')[0]


def _imported_packages(path: pathlib.Path):
  """(line, top-level project package) for every import of the project's packages in the file."""
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
  # pytest puts tests/ on sys.path, so a test module can import another by its bare name.
  test_modules = {p.stem for p in (_REPO / 'tests').glob('*.py')} | {'tests'}
  shared = [f'{p.relative_to(_REPO)}:{line} imports {top}'
            for p in (_REPO / 'tests').glob('*.py') for line, top in _imported_modules(p)
            if top in test_modules]
  assert not shared, 'tests share code through testing/ and tests/conftest.py, not each other: ' + \
      ', '.join(shared)
