import pytest
import torch
from torch import nn

from shrink.errors import ConfigError, DataError
from shrink.eval.language import perplexity
from shrink.llm.w8a8 import quantize_w8a8
from shrink.quant.runtimes.torch_token import TokenInt8Linear, onednn_int8_available
from shrink.zoo.llm import tiny_llama

pytestmark = pytest.mark.skipif(not onednn_int8_available(), reason="needs oneDNN int8 kernels (x86)")


@pytest.mark.slow
def test_w8a8_tiny_llama_runs_on_int8_kernels_and_keeps_perplexity():
    model = tiny_llama()
    ids = torch.randint(0, 256, (4, 32))
    q = quantize_w8a8(model, list(ids[:3]))
    kinds = {type(q.model.layers[0].self_attn.q_proj).__name__, type(q.model.layers[1].mlp.down_proj).__name__}
    assert kinds <= {"SharedInputMember", "TokenInt8Linear"}
    assert isinstance(q.lm_head, nn.Linear)  # kept float
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.Linear)  # input untouched
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, q(input_ids=ids).logits
    assert nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999
    assert perplexity(q, ids) == pytest.approx(perplexity(model, ids), rel=0.01)


def test_w8a8_needs_calibration():
    with pytest.raises(DataError, match="calibration"):
        quantize_w8a8(tiny_llama(), [])


@pytest.mark.slow
def test_w8a8_bf16_float_parts_keep_int8_layers_in_float32_scales():
    model = tiny_llama()
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    fp32 = quantize_w8a8(model, list(ids[:3]))
    bf16 = quantize_w8a8(model, list(ids[:3]), dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.float32  # the input model is not changed
    assert bf16.lm_head.weight.dtype == bf16.model.norm.weight.dtype == torch.bfloat16
    assert bf16.lm_head.weight is bf16.model.embed_tokens.weight  # still tied
    int8 = [m for m in bf16.modules() if isinstance(m, TokenInt8Linear)]
    assert int8 and all(m.weight_scale.dtype == m.colsum.dtype == torch.float32 for m in int8)
    with torch.no_grad():
        a, b = fp32(input_ids=ids).logits, bf16(input_ids=ids).logits
    assert b.dtype == torch.bfloat16
    assert nn.functional.cosine_similarity(a.flatten(), b.float().flatten(), dim=0) > 0.995
    assert perplexity(bf16, ids) == pytest.approx(perplexity(fp32, ids), rel=0.02)
    with pytest.raises(ConfigError, match="dtype"):
        quantize_w8a8(model, list(ids[:3]), dtype=torch.float16)
