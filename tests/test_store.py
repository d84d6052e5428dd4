"""lib/common/store.py: the appender and the reader."""
import pytest

from lib.common import store


def test_an_append_after_a_torn_line_starts_on_its_own_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "tr', encoding="utf-8")
    assert store.read_jsonl(path) == [{"a": 1}, {"a": 2}]
    store.append_jsonl(path, {"a": 4})
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 4}\n'
    with store.JsonlAppender(path) as out:      # nothing torn: nothing cut
        assert out.cut == 0
        out.write({"a": 5})
    assert [r["a"] for r in store.read_jsonl(path)] == [1, 2, 4, 5]
    single = tmp_path / "one.jsonl"
    single.write_text('{"only": ', encoding="utf-8")
    assert store.cut_torn_tail(single) == len('{"only": ') and single.read_text() == ""


def test_a_bad_line_mid_file_is_an_error_naming_file_and_line_unless_skipped(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 3}\n', encoding="utf-8")
    with pytest.raises(store.JsonlError, match=rf"{path}: line 2 is not a JSON record"):
        store.read_jsonl(path)
    said = []
    assert store.read_jsonl(path, on_bad=said.append) == [{"a": 1}, {"a": 3}] and "line 2" in said[0]
    assert store.read_jsonl(tmp_path / "absent.jsonl") == []
