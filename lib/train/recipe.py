"""Stage 02's recipe: TRL's SFTConfig from `train:` fitted to the machine (precision, max_length),
peft's LoraConfig from `lora:`, the length limit on the examples, and the SFTTrainer built from them.
"""
from __future__ import annotations

from lib.common import config, global_batch
from lib.common.settings import Profile
from lib.models import model as model_lib


def precision_kwargs(train: dict, cuda: bool) -> tuple[dict, str, str | None]:
    """(fp16/bf16 kwargs, precision used, note): fp16 needs CUDA; without it we fall back to fp32.

    bf16 is honoured on CPU too (torch's CPU autocast). SFTConfig defaults bf16 to True when
    neither is set, so both are always passed explicitly.
    """
    fp16, bf16 = bool(train.get("fp16")), bool(train.get("bf16"))
    note = None
    if fp16 and not cuda:
        fp16, note = False, "fp16 was requested but there is no CUDA device: training in fp32"
    if bf16 and cuda:
        import torch
        if not torch.cuda.is_bf16_supported():
            bf16, fp16, note = False, True, "bf16 is not supported by this GPU: training in fp16"
    used = "fp16" if fp16 else "bf16" if bf16 else "fp32"
    return {"fp16": fp16, "bf16": bf16}, used, note


def sft_config(cfg: Profile, log=print):
    """SFTConfig(**cfg.train) with output_dir, precision and max_length fitted to the machine, and,
    in one of several processes, per_device_train_batch_size and gradient_accumulation_steps that
    are its share of the profile's batch (lib/common/global_batch.py)."""
    import torch
    from trl import SFTConfig

    train = dict(cfg.train or {})
    cuda = torch.cuda.is_available() and not train.get("use_cpu")
    mixed, precision, note = precision_kwargs(train, cuda)
    if note:
        log(note)
    train.update(mixed)
    limit = model_lib.max_positions(cfg.model)
    if train.get("max_length") is None or train["max_length"] > limit:
        log(f"train.max_length={train.get('max_length')} exceeds the model's {limit} positions: "
            f"using {limit}")
        train["max_length"] = limit
    args = SFTConfig(output_dir=str(config.output_dir(cfg, "checkpoints")), **train)
    if args.world_size > 1:     # known once the SFTConfig has joined the process group
        try:
            share = global_batch.per_process(args.per_device_train_batch_size, args.gradient_accumulation_steps,
                                             args.world_size)
        except ValueError as err:
            raise ValueError(f"{cfg.config_path}: {err}") from None
        train["per_device_train_batch_size"], train["gradient_accumulation_steps"] = share
        args = SFTConfig(output_dir=args.output_dir, **train)
    return args, precision


# The settings notebook 02's prose names, printed beside it so that a drifted sentence shows.
RECIPE = ("model.name_or_path", "data.example_per", "train.completion_only_loss", "train.assistant_only_loss",
          "train.num_train_epochs",
          "train.max_steps", "train.learning_rate", "train.lr_scheduler_type", "train.warmup_steps",
          "train.per_device_train_batch_size", "train.gradient_accumulation_steps", "train.max_grad_norm",
          "train.optim", "train.weight_decay", "train.fp16", "train.bf16", "train.gradient_checkpointing",
          "train.max_length", "lora.r", "lora.lora_dropout")


def describe_recipe(cfg: Profile, *others: dict, keys=RECIPE) -> str:
    """A table of `keys` (dotted) with their values in `cfg` and in each profile of `others`;
    "(default)" where a profile does not set the key (SFTConfig's default then applies)."""
    def value(profile, dotted):
        section, _, key = dotted.partition(".")
        settings = config.as_dict(profile)
        if settings[section] is None:
            return f"({section}: null)"         # lora: null is full fine-tuning
        found = settings[section].get(key, "(default)")
        return "null" if found is None else str(found)

    profiles = (cfg, *others)
    width = max(map(len, keys)) + 2
    lines = ["".join([f"{'key':<{width}}", *(f"{p.profile:<22}" for p in profiles)]).rstrip()]
    lines += ["".join([f"{k:<{width}}", *(f"{value(p, k):<22}" for p in profiles)]).rstrip() for k in keys]
    return "\n".join(lines)


def lora_config(cfg: Profile):
    if not cfg.lora:
        return None
    from peft import LoraConfig
    return LoraConfig(**cfg.lora)


def make_trainer(cfg: Profile, model, tokenizer, dataset, args, callbacks=()):
    """TRL's SFTTrainer; it tokenizes with the tokenizer's chat template and builds the labels."""
    import datasets
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    datasets.disable_progress_bars()      # also when called alone, as notebook 02 does
    score_loss_positions_only()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(cfg), callbacks=list(callbacks))
    # With disable_tqdm the Trainer prints every log as a raw dict; train_log.jsonl and the progress
    # lines (lib/train/training_log.py) already say the same, readably.
    trainer.remove_callback(PrinterCallback)
    return trainer


def check_sharding(cfg: Profile, trainer) -> None:
    """FSDP (configs/accelerate/fsdp.yaml) leaves each process a shard of the model: the format
    check and learning curve, greedy generation in the main process alone, would wait forever for
    the others, and a LoRA merge needs the whole weights. Refused before the first step."""
    if getattr(trainer, "is_fsdp_enabled", False) and (cfg.format_check.heldout or cfg.lora):
        raise ValueError(f"{cfg.config_path}: accelerate.config_file {cfg.accelerate.config_file} shards the "
                         "model (FSDP): set format_check.heldout: 0 and lora: null (the paper profile's), or "
                         "train with configs/accelerate/multi_gpu.yaml (DDP)")


def score_loss_positions_only() -> bool:
    """Have TRL's fused LM head score only the positions the loss reads on a CPU too.

    SFTTrainer computes the loss in chunks without the full logits (trl.kernels.ChunkedLogProbFunction).
    Where Triton runs (CUDA, XPU) it projects only the positions whose label is kept; elsewhere it
    projects every position onto the 49,152-token vocabulary and zeroes the rest afterwards (fixed
    shapes, for compilers such as Neuron's). With the loss on the assistant turns of a conversation
    whose system prompt is most of it, that was 37% of a CPU step. The choice is TRL's private
    `trl.trainer.utils._use_triton`; on a CPU it now answers yes for that choice alone (the kernel
    itself still runs torch ops there). The loss and gradients are the same (tests/test_train.py);
    bench/README.md has the speed. Returns whether the hook was found (False: TRL changed, nothing done)."""
    import trl.trainer.utils as trl_utils

    chooses = getattr(trl_utils, "_use_triton", None)
    if chooses is None:
        return False
    if not getattr(chooses, "scores_loss_positions_on_cpu", False):
        def compact(device) -> bool:
            return device.type == "cpu" or chooses(device)
        compact.scores_loss_positions_on_cpu, compact.original = True, chooses
        trl_utils._use_triton = compact
    return True


def sequence_lengths(dataset, tokenizer) -> list[int]:
    """Tokens of prompt + completion exactly as TRL tokenizes them (the chat template)."""
    return [len(tokenizer.apply_chat_template(p + c, tokenize=True, return_dict=True)["input_ids"])
            for p, c in zip(dataset["prompt"], dataset["completion"])]


def limit_length(dataset, tokenizer, cfg: Profile, max_length: int):
    """Count (and with over_max_positions: drop, remove) the examples longer than max_length."""
    policy = cfg.model.over_max_positions or "truncate"     # null: truncate
    lengths = sequence_lengths(dataset, tokenizer)
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    stats = {"over_max_length": len(too_long), "over_max_positions_policy": policy,
             "truncated": 0, "dropped_too_long": 0,
             "padding_free_tokens": sum(min(n, max_length) for n in lengths)}
    if policy == "drop" and too_long:
        keep = sorted(set(range(len(dataset))) - set(too_long))
        dataset = dataset.select(keep)
        stats["dropped_too_long"] = len(too_long)
    elif policy == "truncate":
        stats["truncated"] = len(too_long)
    return dataset, stats


def check_not_empty(cfg: Profile, left: int, max_length: int, lengths: dict) -> None:
    """Stop with the reason when the length limit left nothing to train on (TRL would only fail
    later with 'num_samples=0')."""
    if left > 0:
        return
    raise ValueError(
        f"{cfg.config_path}: no training example left: {lengths['over_max_length']} examples are "
        f"longer than train.max_length={max_length} tokens and {lengths['dropped_too_long']} were "
        f"dropped (model.over_max_positions={lengths['over_max_positions_policy']}; truncation keeps "
        "the start, so an example whose prompt fills the window keeps no completion to learn). Raise "
        "train.max_length (at most the model's positions) or use shorter examples (data.example_per).")
