"""The codegen's per-instruction-family kernels (tests/backend/test_codegen_insts.py), lowered as
tilus.build lowers them, simulated, and compared with the interpreter on the same inputs."""
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tests.backend import test_codegen_insts as K


def rng():
    return np.random.default_rng(0)


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def lowbit_args(wtype):
    ty = dtypes.get(wtype)
    n = 16
    codes = rng().integers(0, 2 ** ty.nbits, (n, 64)).astype(np.uint8)
    if wtype == "float8_e4m3":
        codes[(codes & 0x7F) == 0x7F] = 0          # no NaN codes
    w = np.asarray(dtypes.pack(codes.reshape(-1), ty))
    return [n, t(w), t(np.zeros(8, np.uint8)), torch.zeros(n, 64)]


CASES = {
    "elementwise": (K.Elementwise, lambda: [70, t(rng().standard_normal((70, 16)).astype(np.float16)),
                                            torch.zeros(70, 16, dtype=torch.float16),
                                            torch.zeros(70, 16, dtype=torch.int32)], 1e-3),
    "reduce": (K.Reduce, lambda: [21, t(rng().standard_normal((21, 100)).astype(np.float32)),
                                  torch.zeros(21, 3)], 1e-5),
    "shapes": (K.Shapes, lambda: [t(rng().standard_normal((16, 8)).astype(np.float32)), torch.zeros(64, 64)], 1e-5),
    "shared": (K.SharedMem, lambda: [40, t(rng().standard_normal((40, 40)).astype(np.float16)),
                                     torch.zeros(40, 40, dtype=torch.float16)], 0),
    "lowbit_int4": (lambda: K.LowBit("int4"), lambda: lowbit_args("int4"), 0),
    "lowbit_uint3": (lambda: K.LowBit("uint3"), lambda: lowbit_args("uint3"), 0),
    "lowbit_float6_e3m2": (lambda: K.LowBit("float6_e3m2"), lambda: lowbit_args("float6_e3m2"), 0),
    "lowbit_float8_e4m3": (lambda: K.LowBit("float8_e4m3"), lambda: lowbit_args("float8_e4m3"), 0),
    "subbyte_memory": (K.SubByteMemory, lambda: [40, t(rng().integers(0, 256, 300).astype(np.uint8)),
                                                 torch.zeros(300, dtype=torch.uint8)], 0),
    "dot_simt": (K.DotSimt, lambda: [t(rng().standard_normal((8, 4)).astype(np.float32)),
                                     t(rng().standard_normal((4, 8)).astype(np.float32)), torch.zeros(8, 8)], 1e-5),
    "dot_int8": (K.DotInt8, lambda: [t(rng().integers(-128, 128, (32, 32)).astype(np.int8)),
                                     t(rng().integers(-128, 128, (32, 32)).astype(np.int8)),
                                     torch.zeros(32, 32, dtype=torch.int32)], 0),
    "relayout": (K.Relayout, lambda: [t(rng().standard_normal((32, 32)).astype(np.float32)), torch.zeros(32, 32)], 0),
    "control": (K.Control, lambda: [50, torch.zeros(50, dtype=torch.int32)], 0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_codegen_kernel_simulated_equals_interpreter(name):
    make, make_args, tol = CASES[name]
    args = make_args()
    ref = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    tilus.simulate(make(), *args)
    tilus.interpret(make(), *ref)
    for got, want in zip(args, ref):
        if isinstance(got, torch.Tensor):
            if tol:
                torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)
            else:
                assert torch.equal(got, want), (got.float() - want.float()).abs().max()
