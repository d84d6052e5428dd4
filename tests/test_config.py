import pytest

from lib.common import config, settings


def test_both_profiles_load_and_hold_the_papers_recipe():
    paper = config.load("paper")
    t = paper.train
    assert (t["learning_rate"], t["warmup_steps"], t["per_device_train_batch_size"],
            t["gradient_accumulation_steps"], t["max_grad_norm"], t["weight_decay"], t["num_train_epochs"],
            t["fp16"], t["gradient_checkpointing"]) == (5e-5, 100, 8, 4, 0.3, 0.01, 1, True, True)
    assert paper.model.name_or_path == "facebook/opt-350m"
    assert paper.inference.temperature == 0.1 and paper.inference.max_iterations == 10
    assert paper.judge.evaluate_times >= 4
    smoke = config.load("smoke")
    assert smoke.stamp and smoke.model.name_or_path is None
    # The chat template is written once, in configs/base.yaml, which both extend.
    base = config.load("base").model.chat_template
    assert "{% generation %}" in base and smoke.model.chat_template == paper.model.chat_template == base


def test_overrides_dotted_and_nested_keep_the_rest():
    cfg = config.load("smoke", {"train.max_steps": 5, "inference": {"batch_size": 2}})
    assert cfg.train["max_steps"] == 5 and cfg.train["learning_rate"] == 4e-3
    assert cfg.inference.batch_size == 2 and cfg.inference.temperature == 0.1
    assert config.load("smoke", {"lora": {"r": 8}}).lora == {"r": 8}


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


def test_lora_and_mini_profiles_are_smoke_with_their_own_keys():
    """lora.yaml and mini.yaml extend smoke.yaml: their own keys, smoke's for the rest."""
    smoke, lora, mini = config.load("smoke"), config.load("lora"), config.load("mini")
    assert (lora.profile, lora.output_dir, lora.stamp) == \
        ("lora", "outputs/lora", "lora smoke profile: not the paper's numbers")
    assert lora.lora == {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "task_type": "CAUSAL_LM",
                            "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]}
    assert smoke.lora is None and lora.train == smoke.train and lora.data == smoke.data
    assert lora.train["learning_rate"] == 4e-3 and lora.train["num_train_epochs"] == 10
    assert lora.model.tiny["hidden_size"] == 128 and lora.inference.tool_env == "offline"
    # mini: the recipe measured in bench/README.md (inv50_retry20) over smoke's other keys.
    assert mini.model.tiny == {"vocab_size": 2048, "num_hidden_layers": 4, "hidden_size": 256, "ffn_dim": 1024,
                                     "num_attention_heads": 4, "word_embed_proj_dim": 256,
                                     "max_position_embeddings": 2048, "dropout": 0.0}
    assert mini.model.tokenizer_pretokenize == "identifiers" and smoke.model.tokenizer_pretokenize is None
    assert (mini.train["num_train_epochs"], mini.train["learning_rate"]) == (5, 2.0e-3)
    assert {k: v for k, v in mini.train.items() if k not in ("num_train_epochs", "learning_rate")} == \
        {k: v for k, v in smoke.train.items() if k not in ("num_train_epochs", "learning_rate")}
    assert {k: getattr(mini.data, k) for k in ("sample_train_queries", "sample_invented_values")} == \
        {"sample_train_queries": 1000, "sample_invented_values": 0.5}
    assert not mini.data.sample_retry_share      # inv50: retried miscopies taught miscopying
    assert mini.data.sample_dir == "data/sample-mini" and mini.data.example_per == "conversation"
    assert mini.data.train_path.startswith("data/sample-mini/") and mini.seed == smoke.seed == 1234
    assert mini.judge == smoke.judge and mini.lora is None
    assert not hasattr(mini, "extends") and mini.config_path.endswith("mini.yaml")


def _write(folder, name, text):
    (folder / name).write_text(text)
    return str(folder / name)


def test_extends_merges_the_profile_over_its_base(tmp_path):
    _write(tmp_path, "base.yaml", "profile: base\nseed: 1\nstamp: s\n"
           "data: {num_proc: 2, histogram_bins: 40}\nmodel: {tiny: {hidden_size: 8, dropout: 0.1}}\n"
           "inference: {groups: [G1_tool, G2_category], temperature: 0.1}\nlora: {r: 4}\n")
    child = _write(tmp_path, "child.yaml", "extends: base.yaml\nprofile: child\nstamp: null\n"
                   "data: {num_proc: 4}\nmodel: {tiny: {hidden_size: 16}}\n"
                   "inference: {groups: [G3_instruction]}\nlora: null\n")
    cfg = config.load(child)
    assert (cfg.profile, cfg.seed, cfg.stamp) == ("child", 1, None)        # null stays null
    assert cfg.data == settings.Data(num_proc=4, histogram_bins=40)               # key by key
    assert cfg.model.tiny == {"hidden_size": 16, "dropout": 0.1}               # nested too
    assert cfg.inference == settings.Inference(groups=["G3_instruction"], temperature=0.1)    # a list replaces
    assert cfg.lora is None and not hasattr(cfg, "extends") and cfg.config_path == child
    # Two levels: a grandchild over the child over the base; a name is a profile of configs/.
    grandchild = _write(tmp_path, "grandchild.yaml", "extends: child.yaml\nlora: {r: 8}\ndata: {max_records: 5}\n")
    cfg = config.load(grandchild, {"data.num_proc": 1})
    assert cfg.lora == {"r": 8} and cfg.data == settings.Data(num_proc=1, histogram_bins=40, max_records=5)
    mine = config.load(_write(tmp_path, "mine.yaml", "extends: smoke\nprofile: mine\ntrain: {max_steps: 3}\n"))
    smoke = config.load("smoke")
    assert mine.train == {**smoke.train, "max_steps": 3} and mine.model == smoke.model


def test_extends_cycles_and_missing_bases_are_named(tmp_path):
    a = _write(tmp_path, "a.yaml", "extends: b.yaml\nprofile: a\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(config.ConfigError, match=f"'extends: a.yaml' makes a cycle: {a} -> .*b.yaml -> {a}$"):
        config.load(a)
    with pytest.raises(config.ConfigError, match="makes a cycle"):
        config.load(_write(tmp_path, "self.yaml", "extends: self.yaml\n"))
    known = r"\(known: lora, mini, paper, smoke, smollm2, smollm2_weak_judge\)"        # configs/base.yaml is no profile
    with pytest.raises(config.ConfigError, match=r"'extends: smok': .*smok\.yaml does not exist " + known):
        config.load(_write(tmp_path, "c.yaml", "extends: smok\n"))


def test_a_bad_key_or_value_in_a_base_names_the_base(tmp_path):
    base = _write(tmp_path, "base.yaml", "inference: {method: foo}\n")
    child = _write(tmp_path, "child.yaml", "extends: base.yaml\nprofile: child\n")
    with pytest.raises(config.ConfigError, match=f"^{base}: 'inference.method' must be one of react, dfsdt"):
        config.load(child)
    _write(tmp_path, "base.yaml", "inference: {methd: react}\n")
    with pytest.raises(config.ConfigError, match=f"^{base}: unknown key 'inference.methd'"):
        config.load(child)
    _write(tmp_path, "base.yaml", "seed: [1\n")
    with pytest.raises(config.ConfigError, match=f"^{base}, line 2.*not valid YAML"):
        config.load(child)
    # ... and one in the profile itself names the profile, not its base.
    _write(tmp_path, "base.yaml", "inference: {method: react}\n")
    _write(tmp_path, "child.yaml", "extends: base.yaml\njudge: {kind: bar}\n")
    with pytest.raises(config.ConfigError, match=f"^{child}: 'judge.kind' must be one of offline, llm"):
        config.load(child)


def test_sft_config_and_lora_config_are_built_when_the_profile_loads(tmp_path):
    """What only TRL's SFTConfig or peft's LoraConfig reject fails on load, naming the file and section."""
    mine = _write(tmp_path, "mine.yaml", "extends: smoke\nprofile: mine\ntrain: {logging_steps: 0}\n")
    with pytest.raises(config.ConfigError, match=f"^{mine} \\(extends .*smoke.yaml, .*base.yaml\\): "
                                                 "'train' is refused by TRL's SFTConfig: .*logging_steps"):
        config.load(mine)
    sft, lora = "'train' is refused by TRL's SFTConfig", "'lora' is refused by peft's LoraConfig"
    for overrides, says in [({"train.logging_steps": 0}, f" train.logging_steps=0: {sft}"),
                            ({"train.fp16": True, "train.bf16": True}, f"{sft}: At most one of fp16 and bf16"),
                            ({"train.warmup_steps": -1}, f"{sft}: .*warmup_steps"),
                            ({"lora": {"r": 8, "layers_pattern": "layers"}}, f"{lora}: .*layers_to_transform")]:
        with pytest.raises(config.ConfigError, match=f"smoke.yaml with the override.*{says}"):
            config.load("smoke", overrides)
    # Built on CPU without setting up a device: the paper's fp16 loads here, accelerate's state is untouched.
    from accelerate.state import PartialState
    before = dict(PartialState._shared_state)
    assert config.load("paper").train["fp16"] is True and config.load("lora").lora["r"] == 16
    assert PartialState._shared_state == before


def test_parse_overrides_reads_key_equals_yaml_value():
    assert config.parse_overrides(["train.max_steps=5", "inference.groups=[G1_tool, G2_category]", "lora=",
                                   "judge.base_url=http://h:1/v1?a=b", "train.learning_rate=1.0e-4"]) == {
        "train.max_steps": 5, "inference.groups": ["G1_tool", "G2_category"], "lora": None,
        "judge.base_url": "http://h:1/v1?a=b", "train.learning_rate": 1e-4}
    assert config.parse_overrides([]) == {}
    for bad, says in [("train.max_steps", "--set takes KEY=VALUE .*got 'train.max_steps'"), ("=5", "got '=5'"),
                      ("inference.groups=[a", "--set inference.groups=\\[a: the value is not valid YAML")]:
        with pytest.raises(config.ConfigError, match=says):
            config.parse_overrides([bad])


def test_paper_paths_follow_the_data_zip_layout():
    """`unzip data.zip -d data/toolbench` must need no path change: ToolBench's zip holds data/..."""
    from pathlib import PurePosixPath
    data = config.load("paper").data
    root = PurePosixPath("data/toolbench")
    assert PurePosixPath(data.train_path).relative_to(root) == PurePosixPath("data/toolllama_G123_dfs_train.json")
    assert PurePosixPath(data.test_dir).relative_to(root) == PurePosixPath("data/test_instruction")
    assert PurePosixPath(data.toolenv_dir).relative_to(root) == PurePosixPath("data/toolenv")
