"""shrink model files that are truncated, corrupted or hostile raise FileFormatError (or ModelError for a file that
does not fit the model), never crash, never unpickle, and never allocate memory that the file's bytes do not justify.

Fuzz counts are small here; ``make fuzz`` sets SHRINK_FUZZ_EXAMPLES for a long run.
"""

from __future__ import annotations

import json
import os
import resource

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save
from torch import nn

import shrink
from shrink.errors import FileFormatError, ModelError

N = int(os.environ.get("SHRINK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=N, deadline=None, suppress_health_check=list(HealthCheck), database=None)
ALLOWED = (FileFormatError, ModelError)


class Tied(nn.Module):
    """A small model with a sparse layer (stored as bitmask + values) and tied weights (stored as an alias)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 12, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.emb(x)))


def _model() -> Tied:
    torch.manual_seed(0)
    m = Tied()
    with torch.no_grad():
        m.body[0].weight[:, ::2] = 0  # 50% zeros: sparse encoding
        m.body[2].weight[::3] = 0
    return m


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "good.shrink"
    shrink.save(_model(), path)
    return path


def _manifest_and_tensors(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["shrink_manifest"]), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def _load_bytes(tmp_path, data: bytes, name: str = "x.shrink"):
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return shrink.load(path, Tied)
    except ALLOWED:
        return None


def test_good_file_round_trips_with_sparse_and_alias(good_file):
    manifest, tensors = _manifest_and_tensors(good_file)
    assert any("sparse" in v for v in manifest["layout"].values())
    assert any("alias" in v for v in manifest["layout"].values())
    loaded = shrink.load(good_file, Tied)
    x = torch.arange(12).reshape(3, 4)
    assert torch.equal(loaded(x), _model()(x))
    assert loaded.head.weight is loaded.emb.weight


def test_truncated_files_raise_file_format_error(good_file, tmp_path, user_sees):
    data = good_file.read_bytes()
    cuts = sorted({0, 1, 7, 8, 9, 100, len(data) // 2, len(data) - 1, *range(0, len(data), max(1, len(data) // 60))})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.shrink"
        path.write_bytes(data[:cut])
        with pytest.raises(FileFormatError, match=f"cut{cut}.shrink"):
            shrink.load(path, Tied)
    path = tmp_path / "truncated.shrink"
    path.write_bytes(data[: len(data) // 2])
    user_sees(
        "model files",
        "model file truncated to half its size",
        lambda: shrink.load(path, Tied),
        FileFormatError,
        "truncated.shrink",
    )
    pickled = tmp_path / "pickle.shrink"
    torch.save(_model(), pickled)  # a whole pickled module, as torch.save(model) writes
    user_sees(
        "model files",
        "pickled torch.save(model) file given to shrink.load",
        lambda: shrink.load(pickled, Tied),
        FileFormatError,
        "pickle.shrink",
        "not a readable shrink model file",
    )


@FUZZ
@given(data=st.data())
def test_fuzz_byte_flips_never_crash(good_file, tmp_path_factory, data):
    raw = bytearray(good_file.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    _load_bytes(tmp_path_factory.getbasetemp(), bytes(raw), "flip.shrink")  # success or a shrink error only


def _write(tmp_path, tensors, manifest, name="h.shrink"):
    meta = {"shrink_manifest": manifest if isinstance(manifest, str) else json.dumps(manifest)}
    path = tmp_path / name
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


def _hostile_cases(good_file):
    manifest, tensors = _manifest_and_tensors(good_file)
    sparse_key = next(k for k, v in manifest["layout"].items() if "sparse" in v)
    alias_key = next(k for k, v in manifest["layout"].items() if "alias" in v)

    def with_layout(**changes):
        m = json.loads(json.dumps(manifest))
        m["layout"].update(changes)
        return m

    def with_module(name, entry):
        m = json.loads(json.dumps(manifest))
        m["modules"][name] = entry
        return m

    huge_linear = {
        "class": "torch.nn.modules.linear:Linear",
        "args": {"in_features": 10**6, "out_features": 10**6, "bias": True},
    }
    return [
        (
            "sparse tensor declaring a 2**40-element shape",
            with_layout(**{sparse_key: {"sparse": [2**20, 2**20]}}),
            tensors,
            ["sparse tensor", "mask of"],
        ),
        (
            "sparse tensor with a negative dimension",
            with_layout(**{sparse_key: {"sparse": [-16, 8]}}),
            tensors,
            ["not a list of non-negative integers"],
        ),
        (
            "sparse shape whose product overflows int64",
            with_layout(**{sparse_key: {"sparse": [2**40, 2**40, 16]}}),
            tensors,
            ["more than 2**40 elements"],
        ),
        (
            "alias loop (a -> b -> a)",
            with_layout(**{alias_key: {"alias": "loop.b"}, "loop.b": {"alias": alias_key}}),
            tensors,
            ["aliases", "not a stored tensor"],
        ),
        ("alias to itself", with_layout(**{alias_key: {"alias": alias_key}}), tensors, ["not a stored tensor"]),
        (
            "sparse mask with missing values tensor",
            manifest,
            {k: v for k, v in tensors.items() if k != f"{sparse_key}@values"},
            ["lacks its mask or values"],
        ),
        (
            "more sparse values than mask bits",
            manifest,
            {**tensors, f"{sparse_key}@values": torch.zeros(tensors[f"{sparse_key}@values"].numel() + 5)},
            ["values for"],
        ),
        (
            "Linear layer declaring 10**6 x 10**6 weights (4 TB) with 1 KB of data",
            with_module("body.0", huge_linear),
            tensors,
            ["do not match the architecture"],
        ),
        (
            "layer class outside torch.nn and shrink (os:system)",
            with_module("body.0", {"class": "os:system", "args": {"command": "touch pwned"}}),
            tensors,
            ["refusing to build layer class 'os:system'"],
        ),
        (
            "manifest nested 100000 levels deep",
            '{"a":' * 100_000 + "1" + "}" * 100_000,
            tensors,
            ["corrupted manifest"],
        ),
        ("manifest that is not JSON", "{not json", tensors, ["corrupted manifest"]),
        ("manifest of a future format version", {**manifest, "version": 99}, tensors, ["format version 99"]),
        ("layout entry that is a number", with_layout(**{sparse_key: 7}), tensors, ["layout of"]),
        (
            "private attribute in a layer's attrs",
            with_module("body", {"class": manifest["modules"]["body"]["class"], "attrs": {"_forward_hooks": "x"}}),
            tensors,
            ["'attrs' must map public names"],
        ),
    ]


def test_hostile_manifests_raise_clear_errors(good_file, tmp_path, user_sees):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i, (tried, manifest, tensors, fragments) in enumerate(_hostile_cases(good_file)):
        path = _write(tmp_path, tensors, manifest, f"hostile{i}.shrink")
        error = ModelError if "architecture" in fragments[0] else FileFormatError
        user_sees("model files", tried, lambda p=path: shrink.load(p, Tied), error, f"hostile{i}.shrink", *fragments)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, f"hostile files made the process grow by {grown_mib:.0f} MiB"
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


JSONS = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(data=st.data())
def test_fuzz_manifest_values_never_crash(good_file, tmp_path_factory, data):
    manifest, tensors = _manifest_and_tensors(good_file)
    section = data.draw(st.sampled_from(["layout", "modules", "root"]))
    if section == "root":
        manifest[data.draw(st.sampled_from(["layout", "modules", "version", "format"]))] = data.draw(JSONS)
    else:
        keys = sorted(manifest[section])
        key = data.draw(st.sampled_from(keys) | st.text(max_size=12))
        if section == "modules" and data.draw(st.booleans()) and key in manifest["modules"]:
            entry = dict(manifest["modules"][key])
            entry[data.draw(st.sampled_from(["class", "args", "attrs"]))] = data.draw(JSONS)
            if isinstance(entry.get("args"), dict) and data.draw(st.booleans()):
                entry["args"] = {k: data.draw(st.integers(-(2**63), 2**63)) for k in entry["args"]}
            manifest["modules"][key] = entry
        else:
            manifest[section][key] = data.draw(JSONS)
    path = _write(tmp_path_factory.getbasetemp(), tensors, manifest, "fuzzm.shrink")
    _load_bytes(tmp_path_factory.getbasetemp(), path.read_bytes(), "fuzzm2.shrink")  # success or a shrink error


@FUZZ
@given(blob=st.binary(max_size=512))
def test_fuzz_random_bytes_raise_file_format_error(tmp_path_factory, blob):
    path = tmp_path_factory.getbasetemp() / "rand.shrink"
    path.write_bytes(blob)
    with pytest.raises(FileFormatError):
        shrink.load(path, Tied)
