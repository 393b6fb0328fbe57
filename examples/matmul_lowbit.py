"""C[M, N] = A[M, K] (fp16) @ dequant(W[K, N]) with W in a 1-8-bit type, written once and
instantiated per weight type (uint3, int4, uint6, float6_e3m2, float4_e2m1 below).

W is stored as packed bytes: a `~tilus.uint8` buffer holding the row-major bit stream of the
[K, N] weight codes (`tilus.dtypes.pack`). N * nbits must be a multiple of 8 so that every row
starts on a byte, hence N % 8 == 0. A block loads a [bk, bn * nbits / 8] byte tile and
reinterprets it with `self.view(..., dtype=wtype, shape=[bk, bn])`.

Dequantization: w = (cast(code, fp16) - zero) * scale[k // group, n], with per-group fp16 scales
(groups along K). Signed and float types are symmetric (zero = 0); unsigned types use the fixed
zero point 2^(nbits-1).
"""
import numpy as np
import torch

import tilus
from tilus import dtypes

WEIGHT_TYPES = ("uint3", "int4", "uint6", "float6_e3m2", "float4_e2m1")


class MatmulLowBit(tilus.Script):
    def __init__(self, wtype, group_size: int = 32, block_m: int = 16, block_n: int = 32,
                 block_k: int = 32):
        super().__init__()
        self.wtype = dtypes.get(wtype)
        self.group_size = group_size
        self.block_m, self.block_n, self.block_k = block_m, block_n, block_k
        assert group_size % block_k == 0, "a k-tile must lie inside one scale group"
        assert block_n * self.wtype.nbits % 8 == 0
        self.zero = 0.0 if self.wtype.is_signed else float(2 ** (self.wtype.nbits - 1))

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: ~tilus.float16,
                 w: ~tilus.uint8, scales: ~tilus.float16, c: ~tilus.float16):
        bm, bn, bk = self.block_m, self.block_n, self.block_k
        nbits = self.wtype.nbits
        self.attrs.blocks = [tilus.cdiv(m, bm), tilus.cdiv(n, bn)]
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.float16, shape=[m, k])
        gw = self.global_view(w, dtype=tilus.uint8, shape=[k, n * nbits // 8])
        gs = self.global_view(scales, dtype=tilus.float16,
                              shape=[tilus.cdiv(k, self.group_size), n])
        gc = self.global_view(c, dtype=tilus.float16, shape=[m, n])
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, bn], init=0.0)
        m0 = self.blockIdx.x * bm
        n0 = self.blockIdx.y * bn
        for kt in self.range(tilus.cdiv(k, bk)):
            ta = self.load_global(ga, offsets=[m0, kt * bk], shape=[bm, bk])
            raw = self.load_global(gw, offsets=[kt * bk, n0 * nbits // 8],
                                   shape=[bk, bn * nbits // 8])
            codes = self.view(raw, dtype=self.wtype, shape=[bk, bn])
            wf = self.cast(codes, dtype=tilus.float16)
            if self.zero != 0.0:
                wf = wf - self.zero
            scale = self.load_global(gs, offsets=[kt * bk // self.group_size, n0], shape=[1, bn])
            self.dot(ta, wf * scale, acc, out=acc)
        self.store_global(gc, self.cast(acc, dtype=tilus.float16), offsets=[m0, n0])


def make_inputs(wtype, m, n, k, group_size, seed=0):
    t = dtypes.get(wtype)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2 ** t.nbits, size=(k, n)).astype(np.uint8)
    values = t.decode(codes).astype(np.float32)
    if not t.is_signed:
        values = values - 2 ** (t.nbits - 1)
    scales = (rng.random((-(-k // group_size), n)) * 0.1 + 0.01).astype(np.float16)
    a = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float16))
    w = torch.from_numpy(np.asarray(dtypes.pack(codes, t)))
    full_scales = np.repeat(scales.astype(np.float32), group_size, axis=0)[:k]
    wdq = torch.from_numpy((values.astype(np.float16) * full_scales.astype(np.float16)))
    ref = a.float() @ wdq.float()
    return a, w, torch.from_numpy(scales), ref


def run(wtype: str = "int4", m: int = 20, n: int = 40, k: int = 80, group_size: int = 32) -> float:
    a, w, scales, ref = make_inputs(wtype, m, n, k, group_size)
    c = torch.empty(m, n, dtype=torch.float16)
    MatmulLowBit(wtype, group_size=group_size)(m, n, k, a, w, scales, c)
    err = (c.float() - ref).abs().max().item()
    assert torch.allclose(c.float(), ref, atol=3e-2, rtol=1e-2), (wtype, err)
    return err


def main() -> None:
    for wtype in WEIGHT_TYPES:
        err = run(wtype)
        print(f"matmul_lowbit {wtype:12s}: [20, 80] @ dequant([80, 40]), group 32, "
              f"max abs error vs torch {err:.3g}")


if __name__ == "__main__":
    main()
