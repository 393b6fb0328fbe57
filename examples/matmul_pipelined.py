"""A software-pipelined fp16 matmul in the Tilus style: `num_stages` shared-memory buffers, each
stage addressed as `sa[stage]`, filled by cp.async `num_stages - 1` tiles ahead of the tile the
tensor cores consume. The schedule is tuned on call: `MatmulPipelined()` takes no block sizes;
its first call on a GPU times the configs below, and on the CPU interpreter it takes the first
config that builds (and says so in the log)."""
import logging

import torch

import tilus
from tilus import float16, float32, int32
from tilus.utils import cdiv


@tilus.autotune("block_m, block_n", [(64, 64), (128, 64), (64, 128)])
@tilus.autotune("block_k", [32, 16])
@tilus.autotune("num_stages", [3, 2])
@tilus.autotune("warps", [4])
class MatmulPipelined(tilus.Script):
    def __init__(self, block_m: int, block_n: int, block_k: int, num_stages: int, warps: int):
        super().__init__()
        self.block_m, self.block_n, self.block_k = block_m, block_n, block_k
        self.num_stages, self.warps = num_stages, warps

    def __call__(self, m: int32, n: int32, k: int32, a: ~float16, b: ~float16, c: ~float16):
        bm, bn, bk, stages = self.block_m, self.block_n, self.block_k, self.num_stages
        self.attrs.blocks = [cdiv(m, bm), cdiv(n, bn)]
        self.attrs.warps = self.warps
        row, col = self.blockIdx.x * bm, self.blockIdx.y * bn
        ga = self.global_view(a, dtype=float16, shape=[m, k])
        gb = self.global_view(b, dtype=float16, shape=[k, n])
        sa = self.shared_tensor(dtype=float16, shape=[stages, bm, bk])
        sb = self.shared_tensor(dtype=float16, shape=[stages, bk, bn])
        acc = self.register_tensor(dtype=float32, shape=[bm, bn], init=0.0)
        tiles = cdiv(k, bk)

        # prologue: tiles 0 .. stages-2 in flight, one commit group each
        for s in range(stages - 1):
            self.copy_async(src=ga, dst=sa[s], offsets=[row, s * bk])
            self.copy_async(src=gb, dst=sb[s], offsets=[s * bk, col])
            self.copy_async_commit_group()

        for t in self.range(tiles):
            # tile t has landed once at most stages-2 newer groups are pending
            self.copy_async_wait_group(stages - 2)
            self.sync()
            # refill the stage tile t-1 used (every thread is past it: the sync above)
            ahead = t + stages - 1
            if ahead < tiles:
                self.copy_async(src=ga, dst=sa[ahead % stages], offsets=[row, ahead * bk])
                self.copy_async(src=gb, dst=sb[ahead % stages], offsets=[ahead * bk, col])
            self.copy_async_commit_group()
            stage = t % stages
            self.dot(self.load_shared(sa[stage]), self.load_shared(sb[stage]), acc, out=acc)

        self.copy_async_wait_group(0)
        self.free_shared(sa)
        self.free_shared(sb)
        gc = self.global_view(c, dtype=float16, shape=[m, n])
        self.store_global(gc, acc.to(float16), offsets=[row, col])


def run(m: int = 70, n: int = 96, k: int = 100) -> tuple[float, MatmulPipelined]:
    torch.manual_seed(0)
    a = (torch.rand(m, k) - 0.5).half()
    b = (torch.rand(k, n) - 0.5).half()
    c = torch.zeros(m, n, dtype=torch.float16)
    kernel = MatmulPipelined()
    kernel(m, n, k, a, b, c)
    err = (c.float() - a.float() @ b.float()).abs().max().item()
    assert err < 2e-2, err
    return err, kernel


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    err, kernel = run()
    print(f"matmul_pipelined: [70, 100] @ [100, 96] with {kernel.num_stages} stages of "
          f"[{kernel.block_m}, {kernel.block_k}] x [{kernel.block_k}, {kernel.block_n}] tiles, "
          f"max error vs torch {err:.2e}")


if __name__ == "__main__":
    main()
