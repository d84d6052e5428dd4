import pytest

from lib import config


def test_both_profiles_load_and_hold_the_papers_recipe():
    paper = config.load("paper")
    t = paper["train"]
    assert (t["learning_rate"], t["warmup_steps"], t["per_device_train_batch_size"],
            t["gradient_accumulation_steps"], t["max_grad_norm"], t["weight_decay"], t["num_train_epochs"],
            t["fp16"], t["gradient_checkpointing"]) == (5e-5, 100, 8, 4, 0.3, 0.01, 1, True, True)
    assert paper["model"]["name_or_path"] == "facebook/opt-350m"
    assert paper["inference"]["temperature"] == 0.1 and paper["inference"]["max_iterations"] == 10
    assert paper["judge"]["evaluate_times"] >= 4
    smoke = config.load("smoke")
    assert smoke["stamp"] and smoke["model"]["name_or_path"] is None
    assert smoke["model"]["chat_template"] == paper["model"]["chat_template"]


def test_overrides_dotted_and_nested_keep_the_rest():
    cfg = config.load("smoke", {"train.max_steps": 5, "inference": {"batch_size": 2}})
    assert cfg["train"]["max_steps"] == 5 and cfg["train"]["learning_rate"] == 4e-3
    assert cfg["inference"]["batch_size"] == 2 and cfg["inference"]["temperature"] == 0.1
    assert config.load("smoke", {"lora": {"r": 8}})["lora"] == {"r": 8}


@pytest.mark.parametrize("overrides, message", [
    ({"trian.max_steps": 5}, "unknown key 'trian'"),
    ({"data.exampel_per": "record"}, "unknown key 'data.exampel_per'"),
    ({"train.learning_rat": 1e-3}, "SFTConfig has no field 'train.learning_rat'"),
    ({"lora": {"rank": 8}}, "LoraConfig has no field 'lora.rank'"),
    ({"data": 3}, "'data' must be a mapping"),
])
def test_unknown_keys_are_rejected_with_their_path(overrides, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.load("smoke", overrides)


def test_unknown_profile_lists_the_known_ones(tmp_path):
    with pytest.raises(config.ConfigError, match="no profile 'nope'.*known: .*smoke"):
        config.load("nope")
    bad = tmp_path / "mine.yaml"
    bad.write_text("profile: mine\nmodle: {}\n")
    with pytest.raises(config.ConfigError, match=f"{bad}: unknown key 'modle'"):
        config.load(str(bad))


def test_paths_resolve_against_the_repository(tmp_path):
    cfg = config.load("smoke", {"output_dir": str(tmp_path / "o")})
    assert config.path(cfg, "data/sample") == config.ROOT / "data" / "sample"
    assert config.output_dir(cfg, "figures") == tmp_path / "o" / "figures" and (tmp_path / "o" / "figures").is_dir()


def test_resumable_dir_resumes_the_same_run_and_sets_every_other_aside(tmp_path):
    cfg = config.load("smoke", {"output_dir": str(tmp_path)})
    said = []
    folder = config.resumable_dir(cfg, "trajectories", {"model": "a"}, log=said.append)
    (folder / "G1_instruction.jsonl").write_text("run a\n")
    assert (config.resumable_dir(cfg, "trajectories", {"model": "a"}) / "G1_instruction.jsonl").exists()
    # Two rotations in a row (b, then c) keep both earlier runs: no single ".previous" slot.
    fresh = config.resumable_dir(cfg, "trajectories", {"model": "b"}, log=said.append)
    assert not (fresh / "G1_instruction.jsonl").exists()
    (fresh / "G1_instruction.jsonl").write_text("run b\n")
    config.resumable_dir(cfg, "trajectories", {"model": "c"}, log=said.append)
    kept = sorted(p.read_text() for p in tmp_path.glob("trajectories.run-*/G1_instruction.jsonl"))
    assert kept == ["run a\n", "run b\n"]
    assert len(said) == 2 and "set aside as" in said[0] and "trajectories.run-" in said[0]
    assert all('"model": "a"' in p.read_text() or '"model": "b"' in p.read_text()
               for p in tmp_path.glob("trajectories.run-*/RUN_KEY.json"))
    # Back to the settings of run a: its folder comes back to resume, c's is set aside in turn.
    (tmp_path / "trajectories" / "G1_instruction.jsonl").write_text("run c\n")
    back = config.resumable_dir(cfg, "trajectories", {"model": "a"}, log=said.append)
    assert (back / "G1_instruction.jsonl").read_text() == "run a\n" and "brought back" in said[-1]
    kept = sorted(p.read_text() for p in tmp_path.glob("trajectories.run-*/G1_instruction.jsonl"))
    assert kept == ["run b\n", "run c\n"]


def test_values_are_checked_when_the_profile_loads():
    for override, says in [({"inference.method": "foo"}, "'inference.method' must be one of react, dfsdt"),
                           ({"judge.kind": "bar"}, "'judge.kind' must be one of offline, llm"),
                           ({"train.learning_rate": "abc"}, "'train.learning_rate' must be float"),
                           ({"train.learning_rate": "1e-4"}, "write 1.0e-4"),
                           ({"train.max_steps": 2.5}, "'train.max_steps' must be int"),
                           ({"train.lr_scheduler_type": "foo"}, "must be one of linear"),
                           ({"lora": {"r": "x"}}, "'lora.r' must be int"),
                           ({"judge.evaluate_times": 0}, "at least 1"),
                           ({"seed": None}, "'seed' must be set")]:
        with pytest.raises(config.ConfigError, match=says):
            config.load("smoke", override)
    assert config.load("smoke", {"train.learning_rate": 1, "train.lr_scheduler_type": "cosine"})


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("data:\n  groups: [a, b\nseed: 3\n")
    with pytest.raises(config.ConfigError, match=f"{bad}, line 3.*not valid YAML"):
        config.load(str(bad))
    with pytest.raises(config.ConfigError, match=r"no profile .*sub/x\.yaml does not exist"):
        config.load(str(tmp_path / "sub" / "x.yaml"))


def test_file_digest_changes_with_content(tmp_path):
    (tmp_path / "a.json").write_text("1")
    before = config.file_digest(tmp_path)
    (tmp_path / "a.json").write_text("2")
    assert config.file_digest(tmp_path) != before
    assert config.file_digest(tmp_path / "a.json") == config.file_digest(tmp_path)


def test_lora_profile_is_smoke_plus_an_adapter():
    smoke, lora = config.load("smoke"), config.load("lora")
    own = ("profile", "output_dir", "stamp", "lora", "config_path")
    assert {k: v for k, v in lora.items() if k not in own} == {k: v for k, v in smoke.items() if k not in own}
    assert lora["lora"]["r"] > 0 and smoke["lora"] is None


def test_paper_paths_follow_the_data_zip_layout():
    """`unzip data.zip -d data/toolbench` must need no path change: ToolBench's zip holds data/..."""
    from pathlib import PurePosixPath
    data = config.load("paper")["data"]
    root = PurePosixPath("data/toolbench")
    assert PurePosixPath(data["train_path"]).relative_to(root) == PurePosixPath("data/toolllama_G123_dfs_train.json")
    assert PurePosixPath(data["test_dir"]).relative_to(root) == PurePosixPath("data/test_instruction")
    assert PurePosixPath(data["toolenv_dir"]).relative_to(root) == PurePosixPath("data/toolenv")


def test_mini_profile_is_smoke_with_the_measured_recipe():
    """configs/mini.yaml copies smoke.yaml but for the keys of the recipe measured in bench/README.md."""
    smoke, mini = config.load("smoke"), config.load("mini")
    recipe = {("model", "tiny"): None, ("model", "tokenizer_pretokenize"): "identifiers",
              ("train", "num_train_epochs"): 5, ("train", "learning_rate"): 2.0e-3,
              ("data", "sample_train_queries"): 1000, ("data", "sample_invented_values"): 0.5,
              ("data", "sample_retry_share"): 0.2}
    for section in ("data", "model", "train", "format_check", "inference", "judge", "report", "lora"):
        a, b = smoke[section] or {}, mini[section] or {}
        for key in set(a) | set(b):
            if (section, key) in recipe or key in ("sample_dir", "train_path", "test_dir", "toolenv_dir"):
                continue
            assert a.get(key) == b.get(key), f"{section}.{key}"
    assert {k: mini["model"]["tiny"][k] for k in ("num_hidden_layers", "hidden_size")} == {"num_hidden_layers": 4, "hidden_size": 256}
    assert mini["data"]["sample_dir"] != smoke["data"]["sample_dir"] and mini["seed"] == smoke["seed"]
