"""Mixed-width output features (tilus.ops.mixed): the one-launch kernel run by the interpreter
against dequantize + torch.matmul at sizes that divide no tile, the parts against quantize of the
same rows, the salient-feature rule against numpy, the error against all-uint4 on a weight with a
few large output features, and bad inputs."""
import copy

import numpy as np
import pytest
import torch

import tilus
from tilus.errors import ArgumentError, QuantizationError
from tilus.ops import MixedQuantizedWeight, matmul, quantize, select_salient_columns

TOL = {torch.float16: dict(rtol=4e-3, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=1e-2)}
N, K, M = 200, 384, 3
SALIENT = [1, 7, 8, 20, 33, 45, 50, 64, 77, 90, 101, 111, 127, 128, 140, 150, 160, 170, 180,
           190, 195, 197, 198, 199]                      # 24 columns, both ends included


def _case(act=torch.float16, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g) * 0.1
    mw = quantize(w, dtype={"uint8": SALIENT, "uint4": "rest"}, group_size=128, **kw)
    a = torch.randn(M, K, generator=g).to(act)
    b = (torch.randn(N, generator=g) * 0.5).to(act)
    return w, mw, a, b


def _reference(a, mw, b):
    out = a.float() @ mw.dequantize(a.dtype).float().t()
    if b is not None:
        out = out + b.float()
    return out.to(a.dtype)


def test_parts_are_quantize_of_the_same_rows():
    """Each part is exactly quantize() of its rows (codes, scales, offsets), the salient rows
    first in increasing order; dequantize() puts every row back in its place."""
    w, mw, _, _ = _case()
    assert isinstance(mw, MixedQuantizedWeight) and mw.shape == (N, K)
    rest = [j for j in range(N) if j not in SALIENT]
    assert mw.perm.tolist() == SALIENT + rest and mw.columns.tolist() == SALIENT
    for part, rows, dtype in ((mw.wide, SALIENT, "uint8"), (mw.narrow, rest, "uint4")):
        alone = quantize(w[rows], dtype, group_size=128)
        assert part.dtype == dtype and part.shape == (len(rows), K)
        assert torch.equal(part.data, alone.data) and torch.equal(part.scales, alone.scales)
        assert torch.equal(part.offsets, alone.offsets)
        torch.testing.assert_close(mw.dequantize(torch.float16)[rows],
                                   alone.dequantize(torch.float16), rtol=0, atol=0)


@pytest.mark.parametrize("act", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_one_launch_interpreter_matches_reference(act, monkeypatch):
    """N = 200 (24 salient: one wide tile, two narrow ones), K = 384, M = 3, bias; one
    MixedQuantMatmul launch whose grid has the three tiles."""
    import tilus.ops.mixed_matmul as mm

    _, mw, a, b = _case(act, scale_dtype=act)
    launched = []
    original = mm.mixed_kernel_for

    def recording(*args):
        kern = original(*args)
        launched.append(type(kern).__name__)
        return kern

    monkeypatch.setattr(mm, "mixed_kernel_for", recording)
    out = matmul(a, mw, b, engine="interpreter")
    assert launched == ["MixedQuantMatmul"]
    assert out.dtype == act and out.shape == (M, N)
    ref = _reference(a, mw, b)
    torch.testing.assert_close(out, ref, **TOL[act])
    torch.testing.assert_close(matmul(a, mw, b), ref, **TOL[act])          # CPU fallback


@pytest.mark.parametrize("sched", [
    dict(block_m=16, block_n=128, block_k=128, split_k=1, warps=4, stages=2),
    dict(block_m=32, block_n=128, block_k=64, split_k=3, warps=8, stages=3),
], ids=["pipelined", "splitk-8warps"])
def test_pipelined_and_split_k_schedules(sched):
    _, mw, a, b = _case(seed=1)
    out = matmul(a[None], mw, None, engine="interpreter", schedule=sched)
    assert out.shape == (1, M, N)
    torch.testing.assert_close(out[0], _reference(a, mw, None), **TOL[torch.float16])


def test_other_type_pairs_and_integer_zero_points():
    """Any two group-scaled types: float8_e4m3 (scale only) with uint3 (offsets) over one group
    per feature; uint8 and uint4 both with integer zero points (zero_mode="int")."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(70, 96, generator=g)
    a = torch.randn(5, 96, generator=g).half()
    mw = quantize(w, dtype={"uint3": "rest", "float8_e4m3": torch.tensor([69, 0, 5])},
                  group_size=None)
    assert mw.wide.dtype == "float8_e4m3" and mw.narrow.dtype == "uint3"
    assert mw.columns.tolist() == [0, 5, 69] and mw.narrow.zero_mode == "float"
    zint = quantize(w, dtype={"uint8": [2, 3], "uint4": "rest"}, group_size=32, zero_mode="int")
    assert zint.wide.zero_mode == zint.narrow.zero_mode == "int"
    for weight in (mw, zint):
        torch.testing.assert_close(matmul(a, weight, engine="interpreter"),
                                   _reference(a, weight, None), **TOL[torch.float16])


def test_salient_columns_follow_the_activation_weighted_norm():
    """score_j = ||X @ w_j||_2 in float64 (numpy), the largest `count`, sorted; ties to the lower
    index."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((50, 32)).astype(np.float32)
    x = rng.standard_normal((4, 6, 32)).astype(np.float32) * np.linspace(0.1, 3, 32)
    score = np.sqrt(((x.reshape(-1, 32).astype(np.float64) @ w.T.astype(np.float64)) ** 2)
                    .sum(axis=0))
    want = sorted(np.argsort(-score, kind="stable")[:7].tolist())
    got = select_salient_columns(torch.from_numpy(w), torch.from_numpy(x).half().float(), 7)
    assert got.dtype == torch.int64 and got.tolist() == want
    tied = np.zeros((6, 4), np.float32)
    tied[[1, 3, 4]] = 1.0                                    # three equal scores
    assert select_salient_columns(torch.from_numpy(tied), torch.ones(2, 4), 2).tolist() == [1, 3]


def test_mixed_is_more_accurate_than_all_uint4_on_large_features(capsys):
    """A weight with 6 output features 40x larger than the others: the calibration rule finds
    them, and 8 bits there cut the output error (relative Frobenius norm) several times."""
    g = torch.Generator().manual_seed(7)
    w = torch.randn(160, 256, generator=g) * 0.02
    big = [3, 40, 41, 99, 130, 159]
    w[big] *= 40.0
    x = torch.randn(32, 256, generator=g)
    cols = select_salient_columns(w, x, len(big))
    assert cols.tolist() == big
    ref = x @ w.t()

    def error(qw) -> float:
        return float((x @ qw.dequantize(torch.float32).t() - ref).norm() / ref.norm())

    uint4 = error(quantize(w, "uint4", group_size=128))
    mixed_w = quantize(w, dtype={"uint8": cols, "uint4": "rest"}, group_size=128)
    mixed = error(mixed_w)
    print(f"relative output error: all uint4 {uint4:.5f}, mixed uint8/uint4 {mixed:.5f} "
          f"({mixed_w.bits_per_weight():.2f} bits per weight)")
    assert mixed < uint4 / 4


@pytest.mark.parametrize("spec, match", [
    ({"uint8": [3, 3], "uint4": "rest"}, "given twice"),
    ({"uint8": [0, 200], "uint4": "rest"}, "out of range"),
    ({"uint8": [-1], "uint4": "rest"}, "out of range"),
    ({"uint8": [], "uint4": "rest"}, "between 1 and N - 1"),
    ({"uint8": list(range(200)), "uint4": "rest"}, "between 1 and N - 1"),
    ({"uint8": [1.5], "uint4": "rest"}, "ints"),
    ({"uint8": torch.tensor([1.0]), "uint4": "rest"}, "integers"),
    ({"uint9": [1], "uint4": "rest"}, "unsupported weight type"),
    ({"uint8": [1], "float16": "rest"}, "unsupported weight type"),
    ({"uint8": [1], "uint4": [2]}, "one of them \"rest\""),
    ({"uint8": "rest", "uint4": "rest"}, "one of them \"rest\""),
    ({"uint8": [1]}, "one of them \"rest\""),
])
def test_bad_specs_raise_quantization_errors(spec, match):
    w = torch.randn(N, K)
    with pytest.raises(QuantizationError, match=match):
        quantize(w, dtype=spec)


def test_bad_calls_raise():
    w, mw, a, b = _case()
    with pytest.raises(QuantizationError, match="group-scaled"):
        quantize(w, dtype={"uint8": [1], "float4_e2m1": "rest"}, scheme="mx")
    with pytest.raises(ArgumentError, match="count must be an int"):
        select_salient_columns(w, a.float(), N)
    with pytest.raises(ArgumentError, match="last dimension must be K"):
        select_salient_columns(w, torch.randn(2, K + 1), 3)
    with pytest.raises(ArgumentError, match="last dimension must be K"):
        matmul(a[:, :-1], mw)
    with pytest.raises(ArgumentError, match="float16 or bfloat16"):
        matmul(a.float(), mw)
    with pytest.raises(ArgumentError, match=r"bias must be a tensor of shape \[200\]"):
        matmul(a, mw, b[:-1])
    with pytest.raises(ArgumentError, match="engine"):
        matmul(a, mw, engine="gpu")
    with pytest.raises(tilus.errors.TilusError, match="needs CUDA"):
        matmul(a, mw, engine="compiled")


def test_quant_linear_from_linear_with_a_mixed_dtype(tmp_path):
    """QuantLinear.from_linear(dtype={...}) gives a MixedQuantLinear: fp16 forward equals
    matmul(x, mw, bias), float32 forward the dequantized weight in float32; its state dict
    round-trips; save_quantized says it does not hold it yet."""
    from torch import nn

    from tilus.nn import MixedQuantLinear, QuantLinear, save_quantized

    torch.manual_seed(2)
    lin = nn.Linear(K, N)
    layer = QuantLinear.from_linear(lin, {"uint8": SALIENT, "uint4": "rest"}, 128)
    assert isinstance(layer, MixedQuantLinear) and layer.wide.out_features == len(SALIENT)
    mw = quantize(lin.weight, dtype={"uint8": SALIENT, "uint4": "rest"}, group_size=128)
    x = torch.randn(2, M, K)
    torch.testing.assert_close(layer(x.half()), matmul(x.half(), mw, lin.bias.half()),
                               rtol=0, atol=0)
    ref32 = x @ mw.dequantize(torch.float32).t() + lin.bias.detach().half().float()
    torch.testing.assert_close(layer(x), ref32, rtol=1e-5, atol=1e-5)
    fresh = MixedQuantLinear.from_quantized(quantize(torch.zeros(N, K), dtype={
        "uint8": SALIENT, "uint4": "rest"}), torch.zeros(N))
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh(x.half()), layer(x.half()), rtol=0, atol=0)
    with pytest.raises(QuantizationError, match="weight-only"):
        QuantLinear.from_linear(lin, {"int8": SALIENT, "uint4": "rest"}, act_dtype="int8")
    with pytest.raises(QuantizationError, match="not in the file format yet"):
        save_quantized(nn.Sequential(layer), tmp_path)
    with pytest.raises(ArgumentError):
        layer(x.int())


def test_the_kernel_path_has_the_activations_gradient():
    """Through the interpreted launch: d(sum(y * g))/da = g @ dequant(W), and the bias's is
    g summed over the rows, as through the fallback."""
    _, mw, a, b = _case(seed=4)
    g = torch.randn(M, N).half()
    grads = []
    for engine in ("interpreter", "fallback"):
        a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
        (matmul(a1, mw, b1, engine=engine).float() * g.float()).sum().backward()
        grads.append((a1.grad, b1.grad))
    want = (g.float() @ mw.dequantize(torch.float32)).half()
    torch.testing.assert_close(grads[0][0], want, rtol=4e-3, atol=2e-3)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=4e-3, atol=2e-3)
    torch.testing.assert_close(grads[0][1], g.sum(0), rtol=4e-3, atol=2e-3)


def test_salient_columns_of_a_model_and_quantize_model():
    """salient_columns runs the calibration batches and picks, per nn.Linear, what
    select_salient_columns picks on that layer's inputs (all batches together); quantize_model
    with salient= makes those layers mixed-width, the others plain QuantLinears, and with a few
    large features in the first layer the model's output error is below all-uint4's."""
    from torch import nn

    from tilus.nn import MixedQuantLinear, QuantLinear, quantize_model, salient_columns

    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 70), nn.Linear(70, 8))
    with torch.no_grad():
        model[0].weight[[4, 30, 31, 77, 90]] *= 10.0          # a few large output features
    batches = [torch.randn(5, 64) for _ in range(3)]
    cols = salient_columns(model, batches, fraction=0.1, skip=["3"])
    assert sorted(cols) == ["0", "2"]
    x = torch.cat(batches)
    assert cols["0"].tolist() == select_salient_columns(model[0].weight, x, 10).tolist()
    assert cols["2"].tolist() == select_salient_columns(model[2].weight, model[:2](x), 7).tolist()
    with torch.no_grad():
        ref = model(x)
    plain = quantize_model(copy.deepcopy(model), "uint4", group_size=None)
    quantize_model(model, "uint4", group_size=None, salient=cols)
    assert isinstance(model[0], MixedQuantLinear) and isinstance(model[3], QuantLinear)
    assert model[2].wide.dtype_name == "uint8" and torch.equal(model[2].perm[:7], cols["2"])
    errors = [float((m(x.half()).float() - ref).norm() / ref.norm()) for m in (model, plain)]
    assert errors[0] < 0.9 * errors[1], errors
    with pytest.raises(ArgumentError, match="fraction"):
        salient_columns(model, batches, fraction=1.0)
