import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from shrink.errors import UnsupportedOpError
from shrink.llm.onnx import OrtDecoder, _onnx_attention, export_decoder
from shrink.llm.onnx_graph import fuse_shared_input_matmuls, simplify
from shrink.llm.weight_only import quantize_weight_only
from shrink.zoo.llm import tiny_llama


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _three_matmuls() -> onnx.ModelProto:
    """y1 = x @ w1, y2 = x @ w2 (siblings), y3 = (x + 1) @ w3 (another input: not fused)."""
    rng = np.random.default_rng(0)
    w = [
        numpy_helper.from_array(rng.standard_normal((8, n)).astype(np.float32), f"w{i}")
        for i, n in enumerate((3, 5, 4))
    ]
    one = numpy_helper.from_array(np.ones(1, np.float32), "one")
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["y0"]),
        helper.make_node("Add", ["x", "one"], ["x1"]),
        helper.make_node("MatMul", ["x1", "w2"], ["y2"]),
        helper.make_node("MatMul", ["x", "w1"], ["y1"]),
    ]
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [2, n]) for i, n in enumerate((3, 5, 4))]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    graph = helper.make_graph(nodes, "g", [x], outs, [*w, one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_sibling_matmuls_fuse_into_one_with_the_same_outputs():
    model = _three_matmuls()
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    before = _run(model, x)
    assert fuse_shared_input_matmuls(model) == 1
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Split", "Add", "MatMul"]
    names = {t.name for t in model.graph.initializer}
    assert "w2" in names and not names & {"w0", "w1"}  # the replaced weights are gone
    for a, b in zip(before, _run(model, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert fuse_shared_input_matmuls(model) == 0  # nothing left to fuse


@pytest.fixture(scope="module")
def llama():
    return tiny_llama(seed=7)


@pytest.mark.parametrize("bits", [None, 4, 8])
def test_optimized_decoder_computes_what_the_plain_export_does(llama, tmp_path, bits):
    model = llama if bits is None else quantize_weight_only(llama, bits, 32)
    plain = export_decoder(model, tmp_path / "plain.onnx", optimize=False)
    fast = export_decoder(model, tmp_path / "fast.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.onnx", "plain.onnx"]  # no temporary file left
    kind = "MatMul" if bits is None else "MatMulNBits"
    count = {p: sum(n.op_type == kind for n in onnx.load(str(p)).graph.node) for p in (plain, fast)}
    layers = llama.config.num_hidden_layers
    assert count[fast] == count[plain] - 3 * layers  # q/k/v into one, gate/up into one, in every layer
    assert len(onnx.load(str(fast)).graph.node) < 0.6 * len(onnx.load(str(plain)).graph.node)
    a, b = OrtDecoder(plain), OrtDecoder(fast)
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(2))
    first, second = a(input_ids=ids), b(input_ids=ids)
    assert torch.allclose(first.logits, second.logits, atol=1e-5)
    nxt = ids[:, -1:]  # a decoding step on the caches each wrote: the dynamic axes survived
    x = a(input_ids=nxt, past_key_values=first.past_key_values)
    y = b(input_ids=nxt, past_key_values=second.past_key_values)
    assert torch.allclose(x.logits, y.logits, atol=1e-5) and y.past_key_values.get_seq_length() == 10


def test_simplify_keeps_what_the_graph_computes():
    model = _three_matmuls()
    out = simplify(model)
    x = np.ones((2, 8), np.float32)
    for a, b in zip(_run(model, x), _run(out, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_optimized_attention_without_grouped_heads_matches_torch(tmp_path):
    model = tiny_llama(seed=8, heads=4, kv_heads=4)
    decoder = OrtDecoder(export_decoder(model, tmp_path / "mha.onnx"))
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
    assert torch.allclose(decoder(input_ids=ids).logits, ref, atol=1e-4)


def test_attention_the_optimized_export_does_not_write_is_refused():
    model = tiny_llama(seed=8)
    attention = model.model.layers[0].self_attn
    q, kv = torch.zeros(1, 4, 2, 16), torch.zeros(1, 2, 2, 16)
    with pytest.raises(UnsupportedOpError, match=r"\['softcap'\].*optimize=False"):
        _onnx_attention(attention, q, kv, kv, None, softcap=30.0)
    out, _ = _onnx_attention(attention, q, kv, kv, None, softcap=None)  # absent: fine
    assert out.shape == (1, 2, 4, 16)


def test_weight_only_graph_keeps_no_more_shape_operators_than_the_float_one(llama, tmp_path):
    """MatMulNBits's output shapes are inferred (ONNX Runtime's symbolic inference), so the batch of 1 behind it
    folds as it does behind a float MatMul."""
    shape_ops = ("Shape", "Gather", "Unsqueeze", "Concat")
    counts = []
    for name, model in (("f.onnx", llama), ("q.onnx", quantize_weight_only(llama, 4, 32))):
        graph = onnx.load(str(export_decoder(model, tmp_path / name))).graph
        counts.append(sum(n.op_type in shape_ops for n in graph.node))
    assert counts[1] <= counts[0]
