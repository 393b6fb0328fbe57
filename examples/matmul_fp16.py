"""C = A @ B in fp16 with fp32 accumulation: tiles of A and B go to shared memory with copy_async
(out-of-bounds elements arrive as zeros, which masks the K tail), then to registers and the dot."""
import torch

import tilus


class MatmulFp16(tilus.Script):
    def __init__(self, block_m: int = 32, block_n: int = 32, block_k: int = 16):
        super().__init__()
        self.block_m, self.block_n, self.block_k = block_m, block_n, block_k

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32,
                 a: ~tilus.float16, b: ~tilus.float16, c: ~tilus.float16):
        bm, bn, bk = self.block_m, self.block_n, self.block_k
        self.attrs.blocks = [tilus.cdiv(m, bm), tilus.cdiv(n, bn)]
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.float16, shape=[m, k])
        gb = self.global_view(b, dtype=tilus.float16, shape=[k, n])
        gc = self.global_view(c, dtype=tilus.float16, shape=[m, n])
        sa = self.shared_tensor(dtype=tilus.float16, shape=[bm, bk])
        sb = self.shared_tensor(dtype=tilus.float16, shape=[bk, bn])
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, bn], init=0.0)
        m0 = self.blockIdx.x * bm
        n0 = self.blockIdx.y * bn
        for kt in self.range(tilus.cdiv(k, bk)):
            self.copy_async(src=ga, dst=sa, offsets=[m0, kt * bk])
            self.copy_async(src=gb, dst=sb, offsets=[kt * bk, n0])
            self.copy_async_commit_group()
            self.copy_async_wait_group(0)
            self.sync()
            ta = self.load_shared(sa)
            tb = self.load_shared(sb)
            self.dot(ta, tb, acc, out=acc)
            self.sync()
        self.free_shared(sa)
        self.free_shared(sb)
        self.store_global(gc, self.cast(acc, dtype=tilus.float16), offsets=[m0, n0])


def run(m: int = 70, n: int = 50, k: int = 90, tiles=(32, 32, 16)) -> float:
    torch.manual_seed(0)
    a = torch.randn(m, k).half()
    b = torch.randn(k, n).half()
    c = torch.empty(m, n, dtype=torch.float16)
    MatmulFp16(*tiles)(m, n, k, a, b, c)
    ref = (a.float() @ b.float())
    err = (c.float() - ref).abs().max().item()
    assert torch.allclose(c.float(), ref, atol=2e-2, rtol=1e-2), err
    return err


def main() -> None:
    err = run()
    print(f"matmul_fp16: [70, 90] @ [90, 50] in 32x32x16 tiles, max abs error vs torch {err:.3g}")


if __name__ == "__main__":
    main()
