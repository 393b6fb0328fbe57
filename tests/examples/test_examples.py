"""Every example runs through the interpreter and matches torch, at sizes that don't divide the tiles."""
import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"tilus_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["vector_add", "softmax", "matmul_fp16", "matmul_lowbit",
                                  "matmul_splitk", "matmul_pipelined", "softmax_layernorm"])
def test_main_runs(name, capsys):
    load(name).main()
    assert name in capsys.readouterr().out


def test_vector_add_tail():
    load("vector_add").run(n=777, block=128)


def test_softmax_tails():
    load("softmax").run(m=21, n=37, block_m=8, block_n=64)


def test_matmul_fp16_tails():
    load("matmul_fp16").run(m=37, n=45, k=51, tiles=(16, 32, 16))


@pytest.mark.parametrize("wtype", ["uint3", "int4", "uint6", "float6_e3m2", "float4_e2m1",
                                   "uint8", "int2", "float5_e2m2"])
def test_matmul_lowbit(wtype):
    load("matmul_lowbit").run(wtype, m=19, n=48, k=70, group_size=32)


def test_matmul_lowbit_programs_differ_only_in_the_weight_type():
    mod = load("matmul_lowbit")
    p3 = str(mod.MatmulLowBit("uint3").program())
    p4 = str(mod.MatmulLowBit("int4").program())
    assert "uint3" in p3 and "int4" in p4 and "sub(" in p3 and "sub(" not in p4


def test_matmul_splitk():
    load("matmul_splitk").run(m=33, n=40, k=75, split_k=2)
    load("matmul_splitk").run(m=20, n=20, k=200, split_k=4)


def test_matmul_pipelined_tails_and_a_single_tile():
    load("matmul_pipelined").run(m=33, n=20, k=40)
    load("matmul_pipelined").run(m=16, n=16, k=16)


@pytest.mark.slow
def test_matmul_pipelined_compiled_kernel_simulates():
    """The compiled kernel (run-time stage indices into the shared buffers) on the CPU simulator."""
    pytest.importorskip("tvm")
    import torch

    import tilus

    m, n, k = 40, 64, 80
    torch.manual_seed(0)
    a, b = (torch.rand(m, k) - 0.5).half(), (torch.rand(k, n) - 0.5).half()
    c = torch.zeros(m, n, dtype=torch.float16)
    kernel = load("matmul_pipelined").MatmulPipelined(64, 64, 16, 3, 4)
    program, args = kernel.instantiate(m, n, k, a, b, c)
    tilus.simulate(program, *args, arch="sm_90")
    assert (c.float() - a.float() @ b.float()).abs().max().item() < 2e-2


def test_softmax_layernorm_tails():
    load("softmax_layernorm").run(m=3, n=1100)
    load("softmax_layernorm").run(m=9, n=7)


@pytest.mark.slow
def test_softmax_layernorm_stay_within_64_registers_at_sm_90():
    pytest.importorskip("tvm")
    import tilus

    mod = load("softmax_layernorm")
    for cls in (mod.RowSoftmax, mod.RowLayerNorm):
        for (block_m, block_n), warps in ((mod.SCHEDULES[0], 4), (mod.SCHEDULES[1], 8)):
            res = tilus.build(cls(block_m, block_n, warps), arch="sm_90").resources
            assert res.registers <= 64 and res.spill_store_bytes == res.spill_load_bytes == 0, \
                (cls.__name__, block_m, block_n, warps, res)


@pytest.mark.parametrize("name, cls, params", [
    ("vector_add", "VecAdd", {"block": 128}),
    ("softmax", "Softmax", {"block_m": 8, "block_n": 64}),
    ("matmul_fp16", "MatmulFp16", {}),
    ("matmul_lowbit", "MatmulLowBit", {"wtype": "float6_e3m2"}),
    ("matmul_splitk", "MatmulSplitK", {}),
    ("matmul_pipelined", "MatmulPipelined", {"block_m": 64, "block_n": 64, "block_k": 16,
                                             "num_stages": 3, "warps": 4}),
    ("softmax_layernorm", "RowLayerNorm", {"block_m": 4, "block_n": 256, "warps": 4}),
])
def test_example_programs_round_trip_through_text(name, cls, params):
    import tilus

    program = getattr(load(name), cls)(**params).program()
    text = str(program)
    assert tilus.ir.parse(text) == program
    assert str(tilus.ir.parse(text)) == text
