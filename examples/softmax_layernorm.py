"""Row softmax and layer norm over rows of any length, in the Tilus style: each block sweeps its
`block_m` rows in `block_n`-wide tiles with `range` over the run-time row length, keeping per-row
partial results in a tile and reducing them once. Layout inference spreads every row over a
warp's lanes (the reductions are warp shuffles), so no thread holds a whole row: at sm_90 each
kernel stays within 64 registers without spilling (`tilus.build(...).resources`)."""
import torch

import tilus
from tilus import float16, float32, int32
from tilus.utils import cdiv

SCHEDULES = [(4, 256), (1, 1024), (8, 128)]


@tilus.autotune("block_m, block_n", SCHEDULES)
@tilus.autotune("warps", [4, 8])
class RowSoftmax(tilus.Script):
    """y = softmax(x) along rows of x[m, n] (fp16 in and out, fp32 inside)."""

    def __init__(self, block_m: int, block_n: int, warps: int):
        super().__init__()
        self.block_m, self.block_n, self.warps = block_m, block_n, warps

    def __call__(self, m: int32, n: int32, x: ~float16, y: ~float16):
        self.attrs.blocks = [cdiv(m, self.block_m)]
        self.attrs.warps = self.warps
        shape = [self.block_m, self.block_n]
        row = self.blockIdx.x * self.block_m
        gx = self.global_view(x, dtype=float16, shape=[m, n])
        gy = self.global_view(y, dtype=float16, shape=[m, n])

        # columns past n read as -inf: they change neither the max nor (exp(-inf) = 0) the sum
        best = self.register_tensor(dtype=float32, shape=shape, init=float("-inf"))
        for col in range(0, n, self.block_n):
            tile = self.load_global(gx, offsets=[row, col], shape=shape, other=float("-inf"))
            best = self.maximum(best, tile.to(float32))
        row_max = self.max(best, dim=1, keepdim=True)

        total = self.register_tensor(dtype=float32, shape=shape, init=0.0)
        for col in range(0, n, self.block_n):
            tile = self.load_global(gx, offsets=[row, col], shape=shape, other=float("-inf"))
            total = total + self.exp(tile.to(float32) - row_max)
        scale = 1.0 / self.sum(total, dim=1, keepdim=True)

        for col in range(0, n, self.block_n):
            tile = self.load_global(gx, offsets=[row, col], shape=shape, other=float("-inf"))
            out = self.exp(tile.to(float32) - row_max) * scale
            self.store_global(gy, out.to(float16), offsets=[row, col])


@tilus.autotune("block_m, block_n", SCHEDULES)
@tilus.autotune("warps", [4, 8])
class RowLayerNorm(tilus.Script):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta along rows of x[m, n] (fp16 in and out)."""

    def __init__(self, block_m: int, block_n: int, warps: int):
        super().__init__()
        self.block_m, self.block_n, self.warps = block_m, block_n, warps

    def __call__(self, m: int32, n: int32, x: ~float16, gamma: ~float16, beta: ~float16,
                 y: ~float16, eps: float32):
        self.attrs.blocks = [cdiv(m, self.block_m)]
        self.attrs.warps = self.warps
        shape = [self.block_m, self.block_n]
        row = self.blockIdx.x * self.block_m
        gx = self.global_view(x, dtype=float16, shape=[m, n])
        gy = self.global_view(y, dtype=float16, shape=[m, n])
        gg = self.global_view(gamma, dtype=float16, shape=[n])
        gb = self.global_view(beta, dtype=float16, shape=[n])

        # columns past n read as 0 and add nothing; the statistics divide by the true n
        s1 = self.register_tensor(dtype=float32, shape=shape, init=0.0)
        s2 = self.register_tensor(dtype=float32, shape=shape, init=0.0)
        for col in range(0, n, self.block_n):
            tile = self.load_global(gx, offsets=[row, col], shape=shape).to(float32)
            s1 = s1 + tile
            s2 = s2 + self.square(tile)
        mean = self.sum(s1, dim=1, keepdim=True) / n
        rstd = self.rsqrt(self.sum(s2, dim=1, keepdim=True) / n - mean * mean + eps)

        for col in range(0, n, self.block_n):
            tile = self.load_global(gx, offsets=[row, col], shape=shape).to(float32)
            g = self.load_global(gg, offsets=[col], shape=[self.block_n]).to(float32)
            b = self.load_global(gb, offsets=[col], shape=[self.block_n]).to(float32)
            out = (tile - mean) * rstd * g + b
            self.store_global(gy, out.to(float16), offsets=[row, col])


def run(m: int = 10, n: int = 300) -> tuple[float, float]:
    torch.manual_seed(0)
    x = (torch.randn(m, n) * 2).half()
    y = torch.zeros_like(x)
    RowSoftmax()(m, n, x, y)
    err_softmax = (y.float() - torch.softmax(x.float(), dim=1)).abs().max().item()
    assert err_softmax < 1e-3, err_softmax
    gamma, beta = torch.rand(n).half() + 0.5, torch.randn(n).half()
    RowLayerNorm()(m, n, x, gamma, beta, y, 1e-5)
    ref = torch.nn.functional.layer_norm(x.float(), [n], gamma.float(), beta.float(), 1e-5)
    err_norm = (y.float() - ref).abs().max().item()
    assert err_norm < 2e-2, err_norm
    return err_softmax, err_norm


def main() -> None:
    err_softmax, err_norm = run()
    print(f"softmax_layernorm: [10, 300] rows, max error vs torch: softmax {err_softmax:.2e}, "
          f"layer norm {err_norm:.2e}")


if __name__ == "__main__":
    main()
