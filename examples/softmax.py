"""Row softmax with Tilus: each block takes `block_m` rows of a [m, n] matrix (n <= block_n);
columns past n load as -inf so they vanish from the max and the sum."""
import torch

import tilus


class Softmax(tilus.Script):
    def __init__(self, block_m: int, block_n: int):
        super().__init__()
        self.block_m = block_m
        self.block_n = block_n

    def __call__(self, m: tilus.int32, n: tilus.int32, x: ~tilus.float32, y: ~tilus.float32):
        self.attrs.blocks = tilus.cdiv(m, self.block_m)
        self.attrs.warps = 4
        gx = self.global_view(x, dtype=tilus.float32, shape=[m, n])
        gy = self.global_view(y, dtype=tilus.float32, shape=[m, n])
        row = self.blockIdx.x * self.block_m
        t = self.load_global(gx, offsets=[row, 0], shape=[self.block_m, self.block_n],
                             other=float("-inf"))
        t = t - self.max(t, dim=1, keepdim=True)
        e = self.exp(t)
        out = e / self.sum(e, dim=1, keepdim=True)
        self.store_global(gy, out, offsets=[row, 0])


def run(m: int = 50, n: int = 100, block_m: int = 16, block_n: int = 128) -> float:
    torch.manual_seed(0)
    x = torch.randn(m, n) * 3
    y = torch.empty(m, n)
    Softmax(block_m, block_n)(m, n, x, y)
    err = (y - torch.softmax(x, dim=1)).abs().max().item()
    assert err < 1e-6, err
    return err


def main() -> None:
    err = run()
    print(f"softmax: [50, 100] in [16, 128] tiles, max error vs torch {err:.2e}")


if __name__ == "__main__":
    main()
