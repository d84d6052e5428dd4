"""lib/common/resume.py: fingerprints, marks, set_aside, resumable folders and the folder lock."""
import multiprocessing

import pytest

from lib.common import resume


def test_resumable_resumes_the_same_run_and_sets_every_other_aside(tmp_path):
    said = []
    trajectories = tmp_path / "trajectories"
    with resume.exclusive(trajectories, "stage 03 inference"):
        folder = resume.resumable(trajectories, {"model": "a"}, log=said.append)
        (folder / "G1_instruction.jsonl").write_text("run a\n")
        assert (resume.resumable(trajectories, {"model": "a"}) / "G1_instruction.jsonl").exists()
        # Two rotations in a row (b, then c) keep both earlier runs: no single ".previous" slot.
        fresh = resume.resumable(trajectories, {"model": "b"}, log=said.append)
        assert not (fresh / "G1_instruction.jsonl").exists()
        (fresh / "G1_instruction.jsonl").write_text("run b\n")
        resume.resumable(trajectories, {"model": "c"}, log=said.append)
        kept = sorted(p.read_text() for p in tmp_path.glob("trajectories.run-*/G1_instruction.jsonl"))
        assert kept == ["run a\n", "run b\n"]
        assert len(said) == 2 and "set aside as" in said[0] and "trajectories.run-" in said[0]
        assert all('"model": "a"' in p.read_text() or '"model": "b"' in p.read_text()
                   for p in tmp_path.glob("trajectories.run-*/RUN_KEY.json"))
        # Back to the settings of run a: its folder comes back to resume, c's is set aside in turn.
        (tmp_path / "trajectories" / "G1_instruction.jsonl").write_text("run c\n")
        back = resume.resumable(trajectories, {"model": "a"}, log=said.append)
        assert (back / "G1_instruction.jsonl").read_text() == "run a\n" and "brought back" in said[-1]
        kept = sorted(p.read_text() for p in tmp_path.glob("trajectories.run-*/G1_instruction.jsonl"))
        assert kept == ["run b\n", "run c\n"]


def test_a_folder_is_stamped_only_under_its_lock_and_a_mark_holds_a_fingerprint(tmp_path):
    with pytest.raises(RuntimeError, match="without holding its lock"):
        resume.resumable(tmp_path / "judgments", {"judge": "a"})
    assert not (tmp_path / "judgments").exists()
    marker, a, b = tmp_path / "stages" / "03.done", resume.fingerprint({"x": 1}), resume.fingerprint({"x": 2})
    assert a != b and not resume.is_marked(marker, a)
    resume.mark(marker, a)
    assert resume.is_marked(marker, a) and not resume.is_marked(marker, b)
    resume.unmark(marker)
    assert resume.mark_of(marker) is None


def test_file_digest_changes_with_content(tmp_path):
    (tmp_path / "a.json").write_text("1")
    before = resume.file_digest(tmp_path)
    (tmp_path / "a.json").write_text("2")
    assert resume.file_digest(tmp_path) != before
    assert resume.file_digest(tmp_path / "a.json") == resume.file_digest(tmp_path)


def test_set_aside_keeps_every_run_and_what_goes_with_it(tmp_path):
    folder = tmp_path / "checkpoints"
    assert resume.set_aside(folder, "run-a") is None             # nothing there: nothing moved
    (folder / "checkpoint-2").mkdir(parents=True)
    log = tmp_path / "train_log.jsonl"
    log.write_text("{}\n")
    first = resume.set_aside(folder, "run-a", also=[log, tmp_path / "absent"])
    assert (first / "checkpoint-2").is_dir() and (first / "train_log.jsonl").exists() and not log.exists()
    (folder / "checkpoint-4").mkdir(parents=True)
    second = resume.set_aside(folder, "run-a")                  # same label, same second: a new name
    assert second != first and (second / "checkpoint-4").is_dir() and (first / "checkpoint-2").is_dir()
    log.write_text("{}\n")
    only_files = resume.set_aside(folder, "run-b", also=[log])  # an empty folder, a log to keep
    assert (only_files / "train_log.jsonl").exists()


def _try_lock(folder) -> str:
    try:
        with resume.exclusive(folder, "the second run"):
            return "got it"
    except resume.FolderBusy as err:
        return str(err)


def test_one_writer_per_folder_and_the_lock_dies_with_its_process(tmp_path):
    folder = tmp_path / "trajectories"
    ctx = multiprocessing.get_context("spawn")
    with resume.exclusive(folder, "stage 03 inference"):
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
    with resume.exclusive(folder, "held forever"):
        time.sleep(600)


def test_a_held_lock_is_handed_down_to_rank_0_of_the_processes_started_for_it(tmp_path):
    """Stage 02's launcher holds the lock while accelerate launch's processes write: their rank 0
    takes it up, no other rank and no other process does, and the lock still names the launcher."""
    import os
    folder = tmp_path / "checkpoints"
    ctx = multiprocessing.get_context("spawn")
    with resume.exclusive(folder, "stage 02 training, accelerate launch of 2 processes"):
        for env, expected in [({**resume.handed_down(), "RANK": "0"}, "got it"),
                              ({**resume.handed_down(), "RANK": "1"}, "is being written by another run"),
                              ({resume.HOLDER_ENV: "1"}, "is being written by another run")]:
            with ctx.Pool(1, initializer=_set_environment, initargs=(env,)) as pool:
                assert expected in pool.apply(_try_lock, (folder,))
        assert (tmp_path / ".checkpoints.lock").read_text().startswith(f"pid {os.getpid()}, stage 02 training")


def _set_environment(env):
    import os
    os.environ.update(env)
