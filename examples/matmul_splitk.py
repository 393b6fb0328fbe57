"""Split-K matmul: C[M, N] (fp32) = A[M, K] @ B[K, N] (fp16) with the K loop split over
`split_k` blocks per output tile (grid axis z). Each block computes a partial sum over its K range;
the partials of one tile are added into C in order of their split index, serialised by a
semaphore per tile: block z waits until sema[tile] == z, adds (z == 0 stores), then releases
sema[tile] = z + 1. The last one resets it to 0 so the semaphores can be reused."""
import torch

import tilus


class MatmulSplitK(tilus.Script):
    def __init__(self, split_k: int = 3, block_m: int = 32, block_n: int = 32, block_k: int = 16):
        super().__init__()
        self.split_k = split_k
        self.block_m, self.block_n, self.block_k = block_m, block_n, block_k

    def __call__(self, m: tilus.int32, n: tilus.int32, k: tilus.int32, a: ~tilus.float16,
                 b: ~tilus.float16, c: ~tilus.float32, sema: ~tilus.int32):
        bm, bn, bk = self.block_m, self.block_n, self.block_k
        tiles_n = tilus.cdiv(n, bn)
        self.attrs.blocks = [tilus.cdiv(m, bm), tiles_n, self.split_k]
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.float16, shape=[m, k])
        gb = self.global_view(b, dtype=tilus.float16, shape=[k, n])
        gc = self.global_view(c, dtype=tilus.float32, shape=[m, n])
        gsema = self.global_view(sema, dtype=tilus.int32, shape=[tilus.cdiv(m, bm) * tiles_n])
        m0 = self.blockIdx.x * bm
        n0 = self.blockIdx.y * bn
        split = self.blockIdx.z
        k_tiles = tilus.cdiv(k, bk)
        per_split = tilus.cdiv(k_tiles, self.split_k)
        first = split * per_split
        last = min(first + per_split, k_tiles)
        acc = self.register_tensor(dtype=tilus.float32, shape=[bm, bn], init=0.0)
        for kt in self.range(first, last):
            ta = self.load_global(ga, offsets=[m0, kt * bk], shape=[bm, bk])
            tb = self.load_global(gb, offsets=[kt * bk, n0], shape=[bk, bn])
            self.dot(ta, tb, acc, out=acc)
        tile = self.blockIdx.x * tiles_n + self.blockIdx.y
        self.lock_semaphore(gsema, index=[tile], value=split)
        if split > 0:
            acc += self.load_global(gc, offsets=[m0, n0], shape=[bm, bn])
        self.store_global(gc, acc, offsets=[m0, n0])
        self.release_semaphore(gsema, index=[tile],
                               value=(split + 1) % self.split_k)


def run(m: int = 40, n: int = 50, k: int = 100, split_k: int = 3) -> float:
    torch.manual_seed(0)
    a = torch.randn(m, k).half()
    b = torch.randn(k, n).half()
    c = torch.empty(m, n, dtype=torch.float32)
    kernel = MatmulSplitK(split_k)
    sema = torch.zeros(-(-m // kernel.block_m) * -(-n // kernel.block_n), dtype=torch.int32)
    kernel(m, n, k, a, b, c, sema)
    ref = a.float() @ b.float()
    err = (c - ref).abs().max().item()
    assert torch.allclose(c, ref, atol=1e-4, rtol=1e-4), err
    assert int(sema.abs().sum()) == 0   # every tile's semaphore was reset
    return err


def main() -> None:
    err = run()
    print(f"matmul_splitk: [40, 100] @ [100, 50], split_k=3, 32x32x16 tiles, "
          f"max abs error vs torch {err:.3g}")


if __name__ == "__main__":
    main()
