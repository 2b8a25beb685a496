"""serving/servables.py's version discovery, on folders (no SavedModel is loaded)."""
import logging

from serving import servables


def _version(base, name):
  (base / name).mkdir(parents=True)
  (base / name / 'saved_model.pb').write_bytes(b'')


def test_versions_are_integer_folders_with_a_saved_model_in_order(tmp_path):
  for name in ('10', '2', '0'):
    _version(tmp_path, name)
  (tmp_path / '7').mkdir()  # no saved_model.pb yet (still being copied)
  (tmp_path / 'latest').mkdir()

  assert servables.list_versions(str(tmp_path)) == [0, 2, 10]
  assert servables.list_versions(str(tmp_path / 'missing')) == []


def test_version_folder_over_int64_is_ignored_with_one_warning(tmp_path, caplog):
  _version(tmp_path, '1')
  _version(tmp_path, '9' * 20)
  _version(tmp_path, str(2 ** 63 - 1))
  caplog.set_level(logging.WARNING)

  for _ in range(3):  # every poll lists again: one warning in all
    assert servables.list_versions(str(tmp_path)) == [1, 2 ** 63 - 1]

  warnings = [r.getMessage() for r in caplog.records if '9' * 20 in r.getMessage()]
  assert len(warnings) == 1 and 'int64' in warnings[0]
