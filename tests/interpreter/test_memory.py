"""load_global / store_global / copy_async / shared tensors against numpy, masking at every edge."""
import numpy as np
import pytest
import torch

import tilus
from tilus import dtypes
from tilus.errors import InterpreterError
from tilus.ir.builder import ProgramBuilder
from tilus.ir.expr import BlockIdx, cdiv

from tests.interpreter.oracles import LOWBIT, SUBBYTE, code_value, pack_bits, unpack_bits


def copy_tile_program(dtype, tile, other=None):
    """dst (a tile-sized tensor) = the tile of src [m, n] at (r, c), out-of-bounds as ``other``."""
    b = ProgramBuilder("copy_tile")
    m, n = b.param("m", dtypes.int32), b.param("n", dtypes.int32)
    r, c = b.param("r", dtypes.int32), b.param("c", dtypes.int32)
    src, dst = b.param("src", ~dtype), b.param("dst", ~dtype)
    gs = b.global_view(src, dtype, [m, n])
    gd = b.global_view(dst, dtype, list(tile))
    x = b.load_global(gs, [r, c], tile, other=other)
    b.store_global(gd, x, [0, 0])
    return b.finish()


def window(a, r, c, tile, other=0):
    out = np.full(tile, other, a.dtype)
    for i in range(tile[0]):
        for j in range(tile[1]):
            if 0 <= r + i < a.shape[0] and 0 <= c + j < a.shape[1]:
                out[i, j] = a[r + i, c + j]
    return out


@pytest.mark.parametrize("r,c", [(0, 0), (-3, -2), (5, 7), (-8, 0), (9, 10), (12, 0), (0, -5),
                                 (3, 12), (-100, 100)])
def test_load_global_masks_every_edge(r, c):
    a = np.arange(10 * 11, dtype=np.float32).reshape(10, 11)
    tile = (4, 6)
    out = np.full(tile, -1, np.float32)
    p = copy_tile_program(dtypes.float32, tile, other=7.5)
    tilus.interpret(p, 10, 11, r, c, a, out)
    np.testing.assert_array_equal(out, window(a, r, c, tile, other=7.5))


@pytest.mark.parametrize("r,c", [(0, 0), (-2, -3), (8, 9), (2, 3), (10, 0), (-4, -6)])
def test_store_global_drops_out_of_bounds(r, c):
    b = ProgramBuilder("st")
    rr, cc = b.param("r", dtypes.int32), b.param("c", dtypes.int32)
    src, dst = b.param("src", ~dtypes.int32), b.param("dst", ~dtypes.int32)
    gs = b.global_view(src, dtypes.int32, [4, 6])
    gd = b.global_view(dst, dtypes.int32, [10, 11])
    x = b.load_global(gs, [0, 0], [4, 6])
    b.store_global(gd, x, [rr, cc])
    p = b.finish()
    tile = np.arange(24, dtype=np.int32).reshape(4, 6) + 1
    guard = np.zeros(10 * 11 + 16, np.int32)
    out = guard[:110].reshape(10, 11)
    tilus.interpret(p, r, c, tile, out)
    want = np.zeros((10, 11), np.int32)
    for i in range(4):
        for j in range(6):
            if 0 <= r + i < 10 and 0 <= c + j < 11:
                want[r + i, c + j] = tile[i, j]
    np.testing.assert_array_equal(out, want)
    assert not guard[110:].any()


def test_load_with_dims_and_strides():
    # a 1-D tile along dimension 0 of a 3-D tensor (a column), and a transposing dims=(1, 0)
    b = ProgramBuilder("dims")
    src, d1, d2 = b.param("src", ~dtypes.int16), b.param("d1", ~dtypes.int16), b.param("d2", ~dtypes.int16)
    g = b.global_view(src, dtypes.int16, [3, 4, 5])
    col = b.load_global(g, [0, 2, 3], [3], dims=[0])
    tr = b.load_global(g, [1, 0, 0], [5, 4], dims=[2, 1])
    b.store_global(b.global_view(d1, dtypes.int16, [3]), col, [0])
    b.store_global(b.global_view(d2, dtypes.int16, [5, 4]), tr, [0, 0])
    a = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    o1, o2 = np.zeros(3, np.int16), np.zeros((5, 4), np.int16)
    tilus.interpret(b.finish(), a, o1, o2)
    np.testing.assert_array_equal(o1, a[:, 2, 3])
    np.testing.assert_array_equal(o2, a[1].T)


def test_explicit_strides_view_transposed_memory():
    b = ProgramBuilder("strides")
    src, dst = b.param("src", ~dtypes.float32), b.param("dst", ~dtypes.float32)
    g = b.global_view(src, dtypes.float32, [4, 3], strides=[1, 4])    # column-major 4x3
    x = b.load_global(g, [0, 0], [4, 3])
    b.store_global(b.global_view(dst, dtypes.float32, [4, 3]), x, [0, 0])
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = np.zeros((4, 3), np.float32)
    tilus.interpret(b.finish(), a, out)
    np.testing.assert_array_equal(out, a.T)


@pytest.mark.parametrize("dtype", SUBBYTE, ids=lambda t: t.name)
def test_subbyte_global_read_and_bit_exact_write(dtype):
    k = dtype.nbits
    n = 37
    rng = np.random.default_rng(k)
    codes = rng.integers(0, 1 << k, size=n)
    buf = pack_bits(codes, k)
    buf = np.concatenate([buf, np.zeros(2, np.uint8)])
    # read elements [5, 5+16) (masked past n), write them at [20, 20+16) of a second stream
    b = ProgramBuilder("sub")
    src, dst = b.param("src", ~dtype), b.param("dst", ~dtype)
    gs = b.global_view(src, dtype, [n])
    gd = b.global_view(dst, dtype, [n])
    x = b.load_global(gs, [25], [16])          # 12 in bounds, 4 masked -> 0
    b.store_global(gd, x, [3])
    out_codes = rng.integers(0, 1 << k, size=n)
    out = np.concatenate([pack_bits(out_codes, k), np.full(2, 0xAB, np.uint8)])
    before = out.copy()
    tilus.interpret(b.finish(), buf, out)
    want = out_codes.copy()
    loaded = np.concatenate([codes[25:37], np.zeros(4, np.int64)])     # 0 is code 0 in every type
    want[3:19] = loaded
    got = unpack_bits(out, k, n)
    np.testing.assert_array_equal(got, want)
    # padding bits of the last element's byte and the bytes after it are untouched
    used_bits = n * k
    tail = np.unpackbits(out, bitorder="little")[used_bits:]
    tail0 = np.unpackbits(before, bitorder="little")[used_bits:]
    np.testing.assert_array_equal(tail, tail0)


@pytest.mark.parametrize("dtype", [t for t in LOWBIT if t.nbits == 8], ids=lambda t: t.name)
def test_byte_types_read_values(dtype):
    codes = np.arange(256, dtype=np.uint8)
    b = ProgramBuilder("bytes")
    src, dst = b.param("src", ~dtype), b.param("dst", ~dtypes.float32)
    x = b.load_global(b.global_view(src, dtype, [256]), [0], [256])
    y = b.cast(x, dtypes.float32)
    b.store_global(b.global_view(dst, dtypes.float32, [256]), y, [0])
    out = np.zeros(256, np.float32)
    buf = codes if dtype.name != "int8" else codes.view(np.int8)
    tilus.interpret(b.finish(), buf, out)
    np.testing.assert_array_equal(out, code_value(dtype, codes).astype(np.float32))


def test_copy_async_and_shared_slices():
    b = ProgramBuilder("shared")
    n = b.param("n", dtypes.int32)
    src, dst = b.param("src", ~dtypes.float16), b.param("dst", ~dtypes.float16)
    g = b.global_view(src, dtypes.float16, [n, 8])
    s = b.shared_tensor(dtypes.float16, [2, 4, 8])
    s0 = b.slice_shared(s, [0, 0, 0], [4, 8])           # s[0]
    s1 = b.slice_shared(s, [1, 0, 0], [4, 8])           # s[1]
    b.copy_async(g, s0, [0, 0])
    b.copy_async(g, s1, [4, 0])                         # rows 4..7: 4..5 exist when n == 6
    b.copy_async_commit_group()
    b.copy_async_wait_group(0)
    b.sync()
    corner = b.slice_shared(s, [1, 2, 4], [2, 4])       # s[1, 2:4, 4:8]
    b.store_shared(corner, b.register_tensor(dtypes.float16, [2, 4], init=-1.0))
    col = b.slice_shared(s, [0, 0, 3], [2, 4], dims=[0, 1])   # s[:, :, 3]
    x = b.load_shared(s)
    c = b.load_shared(col)
    gd = b.global_view(dst, dtypes.float16, [2 * 4 * 8 + 8])
    b.store_global(gd, b.view(x, shape=[64]), [0])
    b.store_global(gd, b.view(c, shape=[8]), [64])
    b.free_shared(s)
    a = torch.arange(48, dtype=torch.float16).reshape(6, 8)
    out = torch.zeros(72, dtype=torch.float16)
    tilus.interpret(b.finish(), 6, a, out)
    want = np.zeros((2, 4, 8), np.float16)
    want[0] = a[:4].numpy()
    want[1, :2] = a[4:].numpy()
    want[1, 2:4, 4:8] = -1
    np.testing.assert_array_equal(out[:64].numpy(), want.reshape(-1))
    np.testing.assert_array_equal(out[64:].numpy(), want[:, :, 3].reshape(-1))


def test_slice_outside_shared_tensor_is_an_error():
    b = ProgramBuilder("bad_slice")
    i = b.param("i", dtypes.int32)
    s = b.shared_tensor(dtypes.int8, [4, 4])
    b.slice_shared(s, [i, 0], [2, 4])
    p = b.finish()
    tilus.interpret(p, 2)
    with pytest.raises(InterpreterError, match="slice_shared"):
        tilus.interpret(p, 3)


def test_free_shared_then_use_is_an_error():
    b = ProgramBuilder("freed")
    s = b.shared_tensor(dtypes.int8, [4])
    b.free_shared(s)
    b.load_shared(s)
    with pytest.raises(InterpreterError, match="before any instruction defines it"):
        tilus.interpret(b.finish())


def test_vector_add_over_blocks_n_not_multiple_of_block():
    block = 128
    b = ProgramBuilder("vadd")
    n = b.param("n", dtypes.int32)
    pa, pb, pc = (b.param(x, ~dtypes.float32) for x in "abc")
    b.blocks = (cdiv(n, block),)
    ga, gb, gc = (b.global_view(p, dtypes.float32, [n]) for p in (pa, pb, pc))
    off = BlockIdx(0) * block
    c = b.binary("add", b.load_global(ga, [off], [block]), b.load_global(gb, [off], [block]))
    b.store_global(gc, c, [off])
    p = b.finish()
    for size in (1, 127, 129, 1000):
        x, y = torch.rand(size), torch.rand(size)
        z = torch.full((size,), -1.0)
        tilus.interpret(p, size, x, y, z)
        assert torch.equal(z, x + y)


def test_grid_order_is_x_fastest(capsys):
    b = ProgramBuilder("order")
    b.blocks = (3, 2, 2)
    idx = b.register_tensor(dtypes.int32, [1],
                            init=BlockIdx(0) + 10 * BlockIdx(1) + 100 * BlockIdx(2))
    b.print_tensor(idx, "id")
    tilus.interpret(b.finish())
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    printed = [ln for ln in lines if "id" in ln]
    want = [(x, y, z) for z in range(2) for y in range(2) for x in range(3)]
    assert [f"[block ({x}, {y}, {z})]" for x, y, z in want] == [ln.split(" id")[0] for ln in printed]


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "int32", "bool"])
def test_register_tensor_init_from_indices(dtype):
    """Element (i, j, k) is init with the index variables bound to i, j, k, converted to the
    tile's dtype, against numpy over np.indices; a run-time scalar takes part."""
    from tilus.ir.expr import select

    t, shape = dtypes.get(dtype), (3, 5, 4)
    b = ProgramBuilder("iota")
    n = b.param("n", dtypes.int32)
    out = b.param("out", ~t)
    g = b.global_view(out, t, list(shape))
    x = b.register_tensor(t, shape, init=lambda i, j, k: select(j < n, i * 20 + j * 4 + k, -1) % 7)
    b.store_global(g, x, [0, 0, 0])
    result = np.zeros(shape, dtype=np.dtype(dtype))
    tilus.interpret(b.finish(), 3, result)
    i, j, k = np.indices(shape)
    np.testing.assert_array_equal(result, (np.where(j < 3, i * 20 + j * 4 + k, -1) % 7).astype(dtype))
