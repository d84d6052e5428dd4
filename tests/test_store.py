"""lib/common/store.py: the appender, the reader, set_aside and the folder lock."""
import multiprocessing

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


def test_set_aside_keeps_every_run_and_what_goes_with_it(tmp_path):
    folder = tmp_path / "checkpoints"
    assert store.set_aside(folder, "run-a") is None             # nothing there: nothing moved
    (folder / "checkpoint-2").mkdir(parents=True)
    log = tmp_path / "train_log.jsonl"
    log.write_text("{}\n")
    first = store.set_aside(folder, "run-a", also=[log, tmp_path / "absent"])
    assert (first / "checkpoint-2").is_dir() and (first / "train_log.jsonl").exists() and not log.exists()
    (folder / "checkpoint-4").mkdir(parents=True)
    second = store.set_aside(folder, "run-a")                  # same label, same second: a new name
    assert second != first and (second / "checkpoint-4").is_dir() and (first / "checkpoint-2").is_dir()
    log.write_text("{}\n")
    only_files = store.set_aside(folder, "run-b", also=[log])  # an empty folder, a log to keep
    assert (only_files / "train_log.jsonl").exists()


def _try_lock(folder) -> str:
    try:
        with store.exclusive(folder, "the second run"):
            return "got it"
    except store.FolderBusy as err:
        return str(err)


def test_one_writer_per_folder_and_the_lock_dies_with_its_process(tmp_path):
    folder = tmp_path / "trajectories"
    ctx = multiprocessing.get_context("spawn")
    with store.exclusive(folder, "stage 03 inference"):
        with ctx.Pool(1) as pool:
            refused = pool.apply(_try_lock, (folder,))
    import os
    assert refused.startswith(f"{folder} is being written by another run (pid {os.getpid()}, stage 03")
    with ctx.Pool(1) as pool:
        assert pool.apply(_try_lock, (folder,)) == "got it"      # released on leaving the block
    # A process killed while holding it leaves no stale lock.
    holder = ctx.Process(target=_hold_forever, args=(folder,))
    holder.start()
    import time
    for _ in range(100):
        if (tmp_path / ".trajectories.lock").exists() and "forever" in (tmp_path / ".trajectories.lock").read_text():
            break
        time.sleep(0.05)
    assert "forever" in _try_lock(folder)
    holder.kill()
    holder.join()
    assert _try_lock(folder) == "got it"


def _hold_forever(folder):
    import time
    with store.exclusive(folder, "held forever"):
        time.sleep(600)
