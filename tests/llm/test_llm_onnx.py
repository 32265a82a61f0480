import onnx
import pytest
import torch
from transformers import DynamicCache

from shrink.errors import ConfigError, DataError, UnsupportedOpError
from shrink.eval.language import greedy_tokens, perplexity
from shrink.llm.onnx import OrtDecoder, export_decoder
from shrink.llm.weight_only import quantize_weight_only
from shrink.zoo.llm import tiny_llama


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=3)


def _prompts() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randint(0, 256, (n,), generator=g) for n in (5, 11)]


def _outputs(nodes: list) -> int:
    """Output columns of MatMulNBits nodes, all together (sibling layers may have been fused into one node)."""
    return sum({a.name: a.i for a in n.attribute}["N"] for n in nodes)


def _outputs_of_linears(model: torch.nn.Module) -> int:
    return sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_float_decoder_matches_torch_prefill_and_decode(model, tmp_path):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    decoder = OrtDecoder(export_decoder(model, tmp_path / "llm.onnx"))
    # idle sessions stop spinning after a run (they would slow whatever runs next in the process)
    assert decoder.session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is left as it was
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
    out = decoder(input_ids=ids, past_key_values=decoder.new_cache())
    assert torch.allclose(out.logits, ref.logits, atol=1e-4)
    assert out.past_key_values.get_seq_length() == 9
    # decoding: greedy tokens from the cached path match torch's, on prompts of lengths the export never saw
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            greedy_tokens(model, _prompts(), 12, DynamicCache),
            greedy_tokens(decoder, _prompts(), 12, decoder.new_cache),
            strict=True,
        )
    )
    windows = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    assert perplexity(decoder, windows, decoder.new_cache) == pytest.approx(perplexity(model, windows), rel=1e-4)


def test_decoder_computes_the_last_logits_alone_when_asked_like_transformers(model, tmp_path):
    decoder = OrtDecoder(export_decoder(model, tmp_path / "llm.onnx"))
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(1))
    full = decoder(input_ids=ids).logits
    for keep in (1, 3):
        with torch.inference_mode():
            ref = model(input_ids=ids, logits_to_keep=keep).logits
        out = decoder(input_ids=ids, logits_to_keep=keep)
        assert out.logits.shape == ref.shape == (1, keep, full.shape[-1])
        assert torch.allclose(out.logits, full[:, -keep:], atol=1e-5)
        assert out.past_key_values.get_seq_length() == 9  # the cache holds every position either way
    with pytest.raises(DataError, match="logits_to_keep=10 for 9 new tokens"):
        decoder(input_ids=ids, logits_to_keep=10)


@pytest.mark.parametrize("asymmetric,group", [(False, 32), (True, 32), (True, 64)])  # 64: one group, zero points padded
def test_int4_layers_export_as_matmulnbits_with_the_same_codes(model, tmp_path, asymmetric, group):
    calib = [torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    q = quantize_weight_only(model, 4, group, "awq", calibration=calib, asymmetric=asymmetric)
    path = export_decoder(q, tmp_path / "int4.onnx", compute="float")
    graph = onnx.load(str(path)).graph
    nbits = [n for n in graph.node if n.op_type == "MatMulNBits"]
    assert _outputs(nbits) == _outputs_of_linears(model)  # every Linear, lm_head included
    assert all(len(n.input) == (4 if asymmetric else 3) for n in nbits)  # zero points only on asymmetric grids
    decoder = OrtDecoder(path)
    assert decoder.weight_bytes() < 0.5 * OrtDecoder(export_decoder(model, tmp_path / "f.onnx")).weight_bytes()
    ids = torch.randint(0, 256, (1, 7), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref = q(input_ids=ids, use_cache=False).logits  # torch's int4 kernel: bf16 activations
    out = decoder(input_ids=ids).logits
    assert (out - ref).norm() / ref.norm() < 0.02


@pytest.mark.parametrize("compute,tolerance", [("float", 0.01), ("int8", 0.05)])
def test_int8_layers_export_as_8bit_matmulnbits_on_the_same_grid(model, tmp_path, compute, tolerance):
    q = quantize_weight_only(model, 8)
    path = export_decoder(q, tmp_path / "int8.onnx", compute=compute)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]
    assert _outputs(nodes) == _outputs_of_linears(model)
    assert all({a.name: a.i for a in n.attribute}["bits"] == 8 for n in nodes)
    decoder = OrtDecoder(path)
    assert decoder.weight_bytes() < 0.4 * OrtDecoder(export_decoder(model, tmp_path / "f.onnx")).weight_bytes()
    ids = torch.randint(0, 256, (1, 7), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref = q(input_ids=ids, use_cache=False).logits
    out = decoder(input_ids=ids).logits
    assert (out - ref).norm() / ref.norm() < tolerance


def test_bad_arguments_and_non_decoders_are_refused(model, tmp_path):
    with pytest.raises(ConfigError, match="compute must be one of"):
        export_decoder(model, tmp_path / "x.onnx", compute="fp8")
    with pytest.raises(UnsupportedOpError, match="decoder shape"):
        export_decoder(torch.nn.Linear(4, 4), tmp_path / "y.onnx")
    assert not list(tmp_path.iterdir())
    with pytest.raises(DataError, match="no ONNX file"):
        OrtDecoder(tmp_path / "missing.onnx")
