"""Tokenizer and model loading.

`paper`: facebook/opt-350m by hub name or local folder, through the Auto classes.
`smoke`: a byte-level BPE tokenizer trained here on the training text, and a tiny OPT built from
`OPTConfig`; both saved with save_pretrained so everything downstream loads them like a hub model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from lib.common import config
from lib.common.settings import Model, Profile

# OPT's own special tokens: <s> (bos, also used as OPT's pad), </s> eos, <unk>, <pad>.
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]

# facebook/opt-350m's architecture (its config.json on the hub): the one post-LayerNorm OPT, with a
# 512-wide embedding projected to and from the 1024-wide decoder. Its weights are stored in float16.
OPT_350M = dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, ffn_dim=4096,
                word_embed_proj_dim=512, vocab_size=50272, max_position_embeddings=2048,
                do_layer_norm_before=False, activation_function="relu", dropout=0.1,
                attention_dropout=0.0, layerdrop=0.0, enable_bias=True)

# Mixed precision keeps float32 master weights and casts per operation: a model loaded in half
# precision makes the fp16 GradScaler fail at the first step ("Attempting to unscale FP16 gradients").
DTYPES = ("float32", "float16", "bfloat16", "auto")


def tokenizer_dir(cfg: Profile) -> Path:
    return config.path(cfg, cfg.output_dir) / "tokenizer"


# Pre-tokenizers: GPT-2's rule (OPT's own) splits identifiers at every underscore, so a function
# name such as current_weather_for_weathernow is 5-7 tokens; "identifiers" keeps [A-Za-z0-9_]+ runs
# whole, so BPE can make each frequent name one token, which a tiny model copies far more easily.
# Whitespace splits as GPT-2's does (\s+(?!\S)): the space that ends a prompt ("Assistant: ") is
# then the same token in training, where a newline follows it, as at inference, where it ends the text.
PRETOKENIZE = {"gpt2": None, "identifiers": r" ?[A-Za-z0-9_]+| ?[^\sA-Za-z0-9_]+|\s+(?!\S)|\s+"}


def train_tokenizer(texts: Iterable[str], vocab_size: int, pretokenize: str = "gpt2"):
    """A byte-level BPE like OPT's (GPT-2 style), trained on our own text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if pretokenize not in PRETOKENIZE:
        raise ValueError(f"model.tokenizer_pretokenize must be one of {sorted(PRETOKENIZE)}, got {pretokenize!r}")
    bpe = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=PRETOKENIZE[pretokenize] is None)
    bpe.pre_tokenizer = byte_level if PRETOKENIZE[pretokenize] is None else pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(PRETOKENIZE[pretokenize]), behavior="isolated"), byte_level])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")


def load_tokenizer(cfg: Profile, train_texts: Iterable[str] | None = None):
    """The profile's tokenizer with the profile's chat template.

    Tiny model: given `train_texts` (the data stage does this), train it on them and save it to
    outputs/<profile>/tokenizer/; without, load it from there. Hub model:
    AutoTokenizer.from_pretrained(model.name_or_path), `train_texts` ignored.
    """
    from transformers import AutoTokenizer

    name = cfg.model.name_or_path
    if name:
        tokenizer = _from_pretrained(AutoTokenizer, name)
    else:
        folder = tokenizer_dir(cfg)
        if train_texts is not None:
            tokenizer = train_tokenizer(train_texts, cfg.model.tiny["vocab_size"],
                                        cfg.model.tokenizer_pretokenize or "gpt2")
            tokenizer.chat_template = cfg.model.chat_template
            tokenizer.save_pretrained(str(folder))
        elif (folder / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
        else:
            raise FileNotFoundError(
                f"no tokenizer at {folder}: run the data stage (01) first, which trains it")
    tokenizer.chat_template = cfg.model.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(auto_class, name: str, **kwargs):
    try:
        return auto_class.from_pretrained(name, **kwargs)
    except OSError as err:
        raise OSError(
            f"could not load '{name}' ({err.__class__.__name__}: {str(err).splitlines()[0]}). "
            "Without hub access, download it elsewhere (e.g. `huggingface-cli download "
            f"{name} --local-dir /path/to/{name.split('/')[-1]}`) and set model.name_or_path "
            "in your profile to that folder.") from err


def max_positions(model_cfg: Model) -> int:
    """The model's number of position embeddings (2048 for every OPT)."""
    if model_cfg.name_or_path:
        from transformers import AutoConfig
        return _from_pretrained(AutoConfig, model_cfg.name_or_path).max_position_embeddings
    return model_cfg.tiny["max_position_embeddings"]


def tiny_config(model_cfg: Model, tokenizer):
    """OPTConfig for the smoke model: model.tiny sizes, OPT's defaults for everything else.

    vocab_size and the special-token ids come from the tokenizer, not from the YAML: the BPE may end
    up with fewer merges than asked for, and an id mismatch would silently train on the wrong tokens.
    """
    from transformers import OPTConfig

    kwargs = dict(model_cfg.tiny or {})
    kwargs.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return OPTConfig(**kwargs)


def load_dtype(cfg: Profile) -> str:
    """model.dtype, checked against the training precision: fp16/bf16 training needs float32."""
    dtype = cfg.model.dtype or "float32"
    if dtype not in DTYPES:
        raise ValueError(f"{cfg.config_path}: model.dtype must be one of {', '.join(DTYPES)}, "
                         f"got {dtype!r}")
    train = cfg.train or {}
    if (train.get("fp16") or train.get("bf16")) and dtype != "float32":
        raise ValueError(
            f"{cfg.config_path}: model.dtype={dtype} with train.fp16/bf16: mixed precision keeps "
            "float32 master weights (a half-precision model fails at the first optimizer step with "
            "'Attempting to unscale FP16 gradients'); set model.dtype: float32")
    return dtype


def load_model(cfg: Profile, tokenizer):
    """The profile's causal LM: the hub/local model by name, or a freshly initialised tiny OPT.

    A hub/local model is loaded in model.dtype (float32 unless set: the hub's opt-350m is stored in
    float16, and transformers would otherwise keep the stored dtype). The tiny model's weights
    depend on the torch RNG: seed (transformers.set_seed) before calling.
    """
    from transformers import AutoModelForCausalLM, OPTForCausalLM

    name = cfg.model.name_or_path
    if name:
        model = _from_pretrained(AutoModelForCausalLM, name, dtype=load_dtype(cfg))
        # OPT's checkpoints carry 50272 rows for a 50265-token tokenizer; only grow, never shrink.
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    else:
        if not cfg.model.tiny:
            raise ValueError(f"{cfg.config_path}: model.name_or_path is null, so model.tiny must "
                             "hold the OPTConfig sizes of the model to build")
        model = OPTForCausalLM(tiny_config(cfg.model, tokenizer))
    for target in (model.config, model.generation_config):
        target.bos_token_id = tokenizer.bos_token_id
        target.eos_token_id = tokenizer.eos_token_id
        target.pad_token_id = tokenizer.pad_token_id
    return model


def save(model, tokenizer, folder, state_dict: dict | None = None) -> Path:
    """save_pretrained model (safetensors) and tokenizer side by side, loadable by the Auto classes;
    `state_dict`: the weights, when the model holds only a shard of them (FSDP)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), state_dict=state_dict)
    tokenizer.save_pretrained(str(folder))
    if not (folder / "model.safetensors").exists() and not list(folder.glob("model-*.safetensors")):
        raise RuntimeError(f"save_pretrained wrote no safetensors file in {folder}")
    return folder


def save_stand_in(folder, texts: Iterable[str], tokenizer_vocab: int = 8192, dtype: str = "float16",
                  **sizes) -> Path:
    """A local folder shaped like the hub's facebook/opt-350m, for dry runs without hub access.

    OPT_350M with `sizes` overriding it (e.g. num_hidden_layers=2, hidden_size=64), random weights
    stored in `dtype` as the hub checkpoint is, and a byte-level BPE of `tokenizer_vocab` tokens
    trained on `texts` in place of OPT's GPT-2 tokenizer (the embedding keeps opt-350m's 50272 rows
    unless `vocab_size` is given; never fewer than the tokenizer has).
    Loaded through model.name_or_path exactly like the real checkpoint.
    """
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    tokenizer = train_tokenizer(texts, tokenizer_vocab)
    shape = {**OPT_350M, **sizes}
    shape["vocab_size"] = max(shape["vocab_size"], len(tokenizer))
    model = OPTForCausalLM(OPTConfig(**shape, bos_token_id=tokenizer.bos_token_id,
                                     eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id))
    return save(model.to(getattr(torch, dtype)), tokenizer, folder)
