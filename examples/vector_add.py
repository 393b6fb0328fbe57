"""c = a + b with Tilus: one block adds `block` elements; the tail block is masked by load/store."""
import torch

import tilus


class VecAdd(tilus.Script):
    def __init__(self, block: int):
        super().__init__()
        self.block = block

    def __call__(self, n: tilus.int32, a: ~tilus.float32, b: ~tilus.float32, c: ~tilus.float32):
        self.attrs.blocks = tilus.cdiv(n, self.block)
        self.attrs.warps = 4
        ga = self.global_view(a, dtype=tilus.float32, shape=[n])
        gb = self.global_view(b, dtype=tilus.float32, shape=[n])
        gc = self.global_view(c, dtype=tilus.float32, shape=[n])
        offset = self.blockIdx.x * self.block
        x = self.load_global(ga, offsets=[offset], shape=[self.block])
        y = self.load_global(gb, offsets=[offset], shape=[self.block])
        self.store_global(gc, x + y, offsets=[offset])


def run(n: int = 1000, block: int = 256) -> float:
    torch.manual_seed(0)
    a, b = torch.randn(n), torch.randn(n)
    c = torch.empty(n)
    VecAdd(block)(n, a, b, c)   # CPU tensors: runs in the interpreter
    err = (c - (a + b)).abs().max().item()
    assert err == 0.0, err
    return err


def main() -> None:
    err = run()
    print(f"vector_add: n=1000 block=256 (4 blocks, last one masked) max error {err}")


if __name__ == "__main__":
    main()
