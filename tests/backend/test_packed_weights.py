"""Format-v2 building blocks: the packed-stream layouts agree with the cast programs, and a kernel
of ``view(..., layout=)`` (reinterpret) + packed cast + fma runs the same in the interpreter and
the simulator of its compiled code, with the fast paths (whole-word casts, HFMA2) taken."""
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.backend.lowbit_cast import cast_program, supported_targets
from tilus.ir.layout.packed import (pair_stride, unit_bytes_layout, weight_fragment_layout,
                                    weight_stream_layout)

LOWBIT = [t for t in dtypes.lowbit_types() if t.nbits <= 8 and not t.is_bool]


@pytest.mark.parametrize("wtype", LOWBIT, ids=lambda t: t.name)
def test_pair_stride_is_the_cast_programs_pairing(wtype):
    for target in supported_targets(wtype):
        prog = cast_program(wtype, target)
        d = pair_stride(wtype.name, target)
        want = sorted((b * 2 * d + j, b * 2 * d + d + j)
                      for b in range(prog.num_elements // (2 * d)) for j in range(d))
        assert sorted(pair for _, pair in prog.outputs) == want, (wtype.name, target)


class PackedTile(tilus.Script):
    """out[32, 128] = fma(cast(codes), s, b) for one packed unit."""

    def __init__(self, wtype: str, act: str = "float16"):
        super().__init__()
        self.wtype = dtypes.get(wtype)
        self.act = dtypes.get(act)

    def __call__(self, w: ~tilus.uint8, s: ~tilus.float16, b: ~tilus.float16,
                 out: ~tilus.float16):
        self.attrs.blocks = 1
        self.attrs.warps = 4
        nb = self.wtype.nbits
        gw = self.global_view(w, dtype=tilus.uint8, shape=[1, 512 * nb])
        gs = self.global_view(s, dtype=tilus.float16, shape=[1, 128])
        gb = self.global_view(b, dtype=tilus.float16, shape=[1, 128])
        go = self.global_view(out, dtype=tilus.float16, shape=[32, 128])
        raw = self.load_global(gw, offsets=[0, 0], shape=[1, 512 * nb])
        self.annotate_layout(raw, unit_bytes_layout(nb))
        codes = self.view(raw, dtype=self.wtype,
                          layout=weight_stream_layout(pair_stride(self.wtype.name)))
        wf = self.cast(codes, dtype=tilus.float16)
        self.annotate_layout(wf, weight_fragment_layout())
        y = self.fma(wf, self.load_global(gs, offsets=[0, 0], shape=[1, 128]),
                     self.load_global(gb, offsets=[0, 0], shape=[1, 128]))
        self.store_global(go, y, offsets=[0, 0])


def _pack_unit(codes: np.ndarray, wtype) -> torch.Tensor:
    """The reference packer: stream position (t, p) holds the code at weight_stream_layout(t, p)."""
    perm = weight_stream_layout(pair_stride(wtype.name)).index_table().reshape(-1)
    return torch.from_numpy(np.asarray(dtypes.pack(codes.reshape(-1)[perm], wtype)))


@pytest.mark.parametrize("name", ["uint3", "int4", "uint4", "uint6", "uint8", "int8", "float4_e2m1",
                                  "float6_e3m2", "float8_e4m3", "uint1"])
def test_packed_unit_interpreter_and_simulator(name):
    wtype = dtypes.get(name)
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 2 ** wtype.nbits, size=(32, 128)).astype(np.uint8)
    if name == "float8_e4m3":
        codes[(codes & 0x7F) == 0x7F] = 0                   # no NaN codes
    w = _pack_unit(codes, wtype)
    s = torch.randn(128).half()
    b = torch.randn(128).half()
    vals = torch.from_numpy(wtype.decode(codes).astype(np.float64))
    ref = (vals * s.double() + b.double()).half()          # exact product+sum, one rounding
    out = torch.zeros(32 * 128, dtype=torch.float16)
    kernel = PackedTile(name)
    tilus.interpret(kernel, w, s, b, out)
    assert torch.equal(out.reshape(32, 128), ref)
    built = tilus.build(kernel, arch="sm_90")
    sim = torch.zeros_like(out)
    tilus.simulate(built, w, s, b, sim)
    assert torch.equal(sim, out)
    src = built.cuda_source
    assert "fma.rn.f16x2" in src                            # the fma ran on half2 pairs
    assert "lop3" in src or "prmt" in src                    # the packed cast program ran
