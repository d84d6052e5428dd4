"""lib.models.memory: the training-memory and checkpoint estimates the pre-flight check sets against the machine."""
import pytest

from lib.models import memory


@pytest.mark.parametrize("seq, measured_gib", [(512, 6.24), (1024, 6.64), (2048, 7.48)])
def test_memory_estimate_within_25_percent_of_h200(seq, measured_gib):
    """torch.cuda.max_memory_allocated on an NVIDIA H200: opt-350m's shape, fp16 mixed precision,
    gradient checkpointing, batch 8 (bench/results/paper_gpu_h200_*.json)."""
    from transformers import OPTConfig

    from lib.models.model import OPT_350M

    shape = memory.shape_of(OPTConfig(**OPT_350M))
    assert shape.params == 331_196_416
    est = memory.training_memory(shape, batch=8, seq=seq, mixed_precision=True, gradient_checkpointing=True)
    assert abs(est["total"] / memory.GIB / measured_gib - 1) < 0.25
    assert est["total"] == max(est["step"], est["backward"])


def test_memory_estimate_grows_with_the_knobs():
    shape = memory.ModelShape(params=331_196_416, layers=24, hidden=1024, ffn=4096, vocab=50272, positions=2048)
    base = memory.training_memory(shape, 8, 2048)
    assert memory.training_memory(shape, 16, 2048)["total"] > base["total"]
    assert memory.training_memory(shape, 8, 2048, gradient_checkpointing=False)["total"] > base["total"]
    assert memory.training_memory(shape, 8, 2048, mixed_precision=False)["total"] > base["total"]
    assert memory.training_memory(shape, 8, 2048, lora=True)["total"] < base["total"]
