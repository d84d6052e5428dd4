"""What training a model takes: peak memory of one training process and the size of a checkpoint.

`shape_of(hf_config)` reads the sizes the estimates need off a transformers config (`ModelShape`);
`training_memory` and `checkpoint_bytes` are pure arithmetic on them. The pre-flight check
(lib.pipeline.preflight) sets them against the GPU's free memory and the disk's free space.
"""
from __future__ import annotations

import dataclasses

GIB = 2 ** 30


@dataclasses.dataclass
class ModelShape:
    """What the memory and disk estimates need to know about a model."""
    params: int
    layers: int
    hidden: int
    ffn: int
    vocab: int
    positions: int


def training_memory(shape: ModelShape, batch: int, seq: int, mixed_precision: bool = True,
                    gradient_checkpointing: bool = True, lora: bool = False) -> dict:
    """Estimated peak memory (bytes) of one training process: two moments compete for the peak.

    a = bytes of an activation: 2 under fp16/bf16 autocast, 4 in fp32; P = parameters; T = batch*seq.
      optimizer step  P * 20: fp32 weights 4 + fp32 grads 4 + AdamW's two moments 8 + the foreach
                      implementation's temporaries, one fp32 tensor list 4.
      loss/backward   P * 16 (the same state), + P * 2 for autocast's half copies of the weights
                      (mixed precision only), + activations, + the logits T * vocab * a.
                      Activations with gradient checkpointing: each layer's input, T * hidden *
                      layers * a (the layer being recomputed is freed before the peak: the logits
                      are the larger tensor). Without: every layer's saved tensors,
                      T * layers * (18 * hidden + 4 * ffn) * a / 2 (Korthikanti et al. 2022, 34 sbh
                      per layer at ffn = 4 hidden, no attention-score term as SDPA keeps none).
    LoRA freezes the base weights: P * 4 (+2), no full-size grads or moments (the adapters' are
    a rounding error).

    Calibration, opt-350m's shape, fp16 mixed precision, gradient checkpointing, batch 8, NVIDIA
    H200, torch.cuda.max_memory_allocated: 6.24 / 6.64 / 7.48 GiB at seq 512 / 1024 / 2048; this
    gives 6.17 / 6.69 / 7.83 GiB (-1% / +1% / +5%). The fp32 logits (4 bytes under autocast too)
    would give 9.4 GiB at 2048, +25%: the measured slope says the logits stay half precision.
    """
    act = 2 if mixed_precision else 4
    tokens = batch * seq
    state = shape.params * (4 if lora else 16)
    half_copies = shape.params * 2 if mixed_precision else 0
    step = state + (0 if lora else shape.params * 4)
    if gradient_checkpointing:
        activations = tokens * shape.hidden * shape.layers * act
    else:
        activations = tokens * shape.layers * (18 * shape.hidden + 4 * shape.ffn) * act // 2
    logits = tokens * shape.vocab * act
    backward = state + half_copies + activations + logits
    return {"total": max(step, backward), "step": step, "backward": backward, "state": state,
            "activations": activations, "logits": logits}


def checkpoint_bytes(shape: ModelShape, lora: bool = False) -> int:
    """One Trainer checkpoint: fp32 weights 4 + AdamW's two moments 8 = 12 bytes per parameter
    (scheduler, RNG and trainer state are kilobytes). A LoRA checkpoint holds only the adapter."""
    return 0 if lora else shape.params * 12


def shape_of(hf_config) -> ModelShape:
    """Parameters counted on the meta device (no memory, exact for any architecture; tied
    embeddings counted once), sizes from the config."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    hidden = hf_config.hidden_size
    ffn = getattr(hf_config, "ffn_dim", None) or getattr(hf_config, "intermediate_size", None) or 4 * hidden
    return ModelShape(params=sum(p.numel() for p in model.parameters()),
                      layers=hf_config.num_hidden_layers, hidden=hidden, ffn=ffn,
                      vocab=hf_config.vocab_size, positions=hf_config.max_position_embeddings)
