"""tilus.ops.moe_matmul on the CPU (the DSL kernel in the interpreter) against a torch reference:
each expert dequantized (``qw.dequantize``), each token's top_k products summed densely in
float64 with its routing weights. Sizes divide no tile; one expert receives no token; the
experts mix integer widths, signed and unsigned, float offsets, a constant zero point and a float
type, all in one launch. Plus the tile table against a loop, and the argument errors."""
from __future__ import annotations

import pytest
import torch

import tilus
from tilus.errors import ArgumentError, QuantizationError
from tilus.ops import moe as moe_mod
from tilus.ops.moe import MoEExperts, default_schedule, moe_matmul, tile_table


def make_experts(types, n, k, group_size=128, seed=0, act=torch.float16, **kw):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(n, k, generator=g) * 0.05 for _ in types]
    return [tilus.ops.quantize(w.to(act), dtype=t, group_size=group_size, **kw)
            for w, t in zip(ws, types)]


def reference(x, experts, ids, weights):
    """Dense per token: y[t] = sum_j w[t, j] * x[t] @ dequant(W_ids[t, j]).T, float64."""
    y = torch.zeros(x.shape[0], experts[0].n, dtype=torch.float64)
    deq = [qw.dequantize(x.dtype).double() for qw in experts]
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            y[t] += float(weights[t, j]) * (x[t].double() @ deq[int(ids[t, j])].T)
    return y


def routing(tokens, top_k, num_experts, seed=0, skip=None):
    """Distinct experts per token (drawn without ``skip``), softmax weights."""
    g = torch.Generator().manual_seed(seed)
    pool = [e for e in range(num_experts) if e != skip]
    ids = torch.stack([torch.tensor(pool)[torch.randperm(len(pool), generator=g)[:top_k]]
                       for _ in range(tokens)])
    weights = torch.softmax(torch.randn(tokens, top_k, generator=g), dim=-1)
    return ids, weights


def check(y, ref, act):
    """y is ref rounded once to act (float32 sums: a few ulps)."""
    assert y.dtype == act
    ulp = 2.0 ** -10 if act == torch.float16 else 2.0 ** -7
    err = (y.double() - ref).abs()
    assert (err <= ref.abs() * 2 * ulp + 1e-3).all(), float(err.max())


def test_mixed_types_one_launch_matches_reference(monkeypatch):
    tokens, top_k, k, n = 13, 2, 256, 72
    experts = make_experts(["uint4", "int4", "uint2", "uint3"], n, k)
    x = torch.randn(tokens, k, generator=torch.Generator().manual_seed(1)).half()
    ids, weights = routing(tokens, top_k, 4, skip=2)           # expert 2 receives no token
    launches = []
    real = moe_mod.kernel_for

    def counting(packed, act, schedule):
        kern = real(packed, act, schedule)
        launches.append(kern)
        return kern

    monkeypatch.setattr(moe_mod, "kernel_for", counting)
    y = moe_matmul(x, experts, (ids, weights))
    assert len(launches) == 1 and len(launches[0].variants) == 4
    program = str(launches[0].program())
    assert program.count("= %gtiles[") == 3 and program.count("= %gexp[") == 4   # load_scalar
    check(y, reference(x, experts, ids, weights), torch.float16)


def test_bfloat16_float_type_const_zero_point_single_group():
    tokens, top_k, k, n = 9, 3, 96, 130
    act = torch.bfloat16
    experts = make_experts(["float4_e2m1", "int3"], n, k, group_size=None, act=act)
    experts += make_experts(["uint4"], n, k, group_size=None, act=act, symmetric=True, seed=2)
    assert experts[2].offsets is None and experts[2].zero_point == 8
    x = torch.randn(tokens, k, generator=torch.Generator().manual_seed(3)).to(act)
    ids, weights = routing(tokens, top_k, 3, seed=4)
    packed = MoEExperts.pack(experts)
    assert [v[1] for v in packed.variants] == ["none", "none", "const"]
    y = moe_matmul(x, packed, (ids, weights))
    check(y, reference(x, experts, ids, weights), act)


def test_tile_table_against_a_loop():
    ids = torch.tensor([[3, 0], [0, 3], [3, 1], [0, 0], [3, 3], [1, 3]])
    order, tiles = tile_table(ids, 5, 2)
    flat = ids.reshape(-1)
    assert torch.equal(flat[order], flat.sort(stable=True).values)
    rows = []
    start = 0
    for e in range(5):
        count = int((flat == e).sum())
        rows += [[e, start + r, start + count] for r in range(0, count, 2)]
        start += count
    used = tiles[tiles[:, 0] >= 0].tolist()
    assert used == rows
    assert tiles.shape[0] == -(-flat.numel() // 2) + 5
    assert (tiles[len(rows):, 0] == -1).all()


def test_errors():
    experts = make_experts(["uint4", "int4"], 72, 256)
    x = torch.randn(3, 256).half()
    ids, weights = routing(3, 2, 2)
    with pytest.raises(ArgumentError, match=r"experts\[1\] is \[N, K\] = \[72, 128\]"):
        moe_matmul(x, [experts[0], make_experts(["uint2"], 72, 128)[0]], (ids, weights))
    with pytest.raises(ArgumentError, match=r"experts\[1\] is \[N, K\] = \[40, 256\]"):
        moe_matmul(x, [experts[0], make_experts(["uint2"], 40, 256)[0]], (ids, weights))
    with pytest.raises(ArgumentError, match="routing names expert 2, but there are 2 experts"):
        moe_matmul(x, experts, (ids + 1, weights))
    with pytest.raises(ArgumentError, match="routing names expert -1"):
        moe_matmul(x, experts, (ids - 1, weights))
    with pytest.raises(ArgumentError, match="expert ids must be integers"):
        moe_matmul(x, experts, (weights, ids))
    with pytest.raises(ArgumentError, match="K = 256"):
        moe_matmul(x[:, :128], experts, (ids, weights))
    with pytest.raises(ArgumentError, match=r"routing ids \[2, 2\]"):
        moe_matmul(x, experts, (ids[:2], weights[:2]))
    with pytest.raises(ArgumentError, match="same group_size"):
        moe_matmul(x, [experts[0], make_experts(["uint4"], 72, 256, group_size=64)[0]],
                   (ids, weights))
    with pytest.raises(QuantizationError, match="zero_mode='int'"):
        moe_matmul(x, [experts[0], make_experts(["uint4"], 72, 256, zero_mode="int")[0]],
                   (ids, weights))


def test_quant_moe_module_matches_its_experts():
    torch.manual_seed(7)
    k, n, experts_n = 160, 50, 5
    linears = [torch.nn.Linear(k, n) for _ in range(experts_n)]
    moe = tilus.nn.QuantMoE.from_linears(linears, dtypes={0: "uint4", 3: "int4"}, default="uint2",
                                         group_size=32)
    assert moe.dtypes == ("uint4", "uint2", "uint2", "int4", "uint2")
    assert len(moe.variants) == 3
    x = torch.randn(2, 3, k).half()
    ids = torch.tensor([[[0, 3], [1, 0], [3, 4]], [[4, 1], [0, 4], [3, 1]]])
    weights = torch.rand(2, 3, 2)
    y = moe(x, (ids, weights))
    assert y.shape == (2, 3, n) and y.dtype == torch.float16
    quantized = [tilus.ops.quantize(m.weight.detach(), dtype=t, group_size=32)
                 for m, t in zip(linears, moe.dtypes)]
    ref = reference(x.reshape(6, k), quantized, ids.reshape(6, 2), weights.reshape(6, 2))
    bias = torch.stack([m.bias.detach() for m in linears]).double()
    ref += (weights.reshape(6, 2, 1).double() * bias[ids.reshape(6, 2)]).sum(1)
    check(y.reshape(6, n), ref, torch.float16)
    moe.float()
    assert moe.scales.dtype == torch.float16 and moe.table.dtype == torch.int64
    assert torch.equal(moe(x, (ids, weights)), y)
    again = tilus.nn.QuantMoE.from_linears(linears, dtypes={0: "uint4", 3: "int4"},
                                           default="uint2", group_size=32)
    again.load_state_dict(moe.state_dict())
    other = tilus.nn.QuantMoE.from_linears(linears, dtypes="uint4", group_size=32)
    with pytest.raises(QuantizationError, match="build it with the same dtypes"):
        other.load_state_dict(moe.state_dict())
    with pytest.raises(ArgumentError, match="3 dtypes for 5 experts"):
        tilus.nn.QuantMoE.from_linears(linears, dtypes=["uint4"] * 3)


def test_cuda_schedule_keeps_k_steps_inside_each_expert():
    """block_k divides the group and the experts' units along K (160 = 5 units: 32; 192 = 6
    units, one group: 64; groups of 64 over 256: 64); a schedule that does not is an error."""
    cuda = torch.device("cuda")
    for k, group, want in ((160, None, 32), (192, None, 64), (256, 64, 64), (512, 128, 128)):
        packed = MoEExperts.pack(make_experts(["uint4", "float8_e4m3"], 40, k, group_size=group))
        assert default_schedule(packed, cuda) == {"block_k": want, "stages": 3}
    assert default_schedule(packed, torch.device("cpu")) == {"block_k": 32, "stages": 1}
    experts = make_experts(["uint4"], 40, 160, group_size=None)
    x = torch.randn(2, 160).half()
    with pytest.raises(ArgumentError, match="block_k=64 must be a multiple of 32 that divides"):
        moe_matmul(x, experts, (torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1)),
                   schedule={"block_k": 64})
    with pytest.raises(ArgumentError, match="unknown schedule key 'split_k'"):
        moe_matmul(x, experts, (torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1)),
                   schedule={"split_k": 2})
