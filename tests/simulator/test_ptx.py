"""PTX instruction semantics against hand-worked cases from the PTX ISA."""
import ml_dtypes
import numpy as np
import pytest

from tilus.simulator import ptx

# ------------------------------------------------------------------ lop3 / prmt

A, B, C = 0xF0F0_1234, 0xCCCC_ABCD, 0xAAAA_5A5A


@pytest.mark.parametrize("lut,expect", [
    (0xF0, A), (0xCC, B), (0xAA, C), (0x00, 0), (0xFF, 0xFFFFFFFF),
    (0x96, A ^ B ^ C),                              # three-input xor
    (0xE8, (A & B) | (B & C) | (A & C)),            # majority
    (0x80, A & B & C), (0xFE, A | B | C), (0x6A, (A & B) ^ C), (0xCA, (A & B) | (~A & C)),
])
def test_lop3_truth_tables(lut, expect):
    assert int(ptx.lop3(A, B, C, lut)) == expect & 0xFFFFFFFF


def test_lop3_vectorised():
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 2**32, 64, dtype=np.uint64).astype(np.uint32) for _ in range(3))
    np.testing.assert_array_equal(ptx.lop3(a, b, c, 0x96), a ^ b ^ c)


@pytest.mark.parametrize("sel,expect", [
    (0x3210, 0xAABBCCDD),         # identity: bytes 0..3 of a
    (0x7654, 0x11223344),         # b
    (0x5410, 0x3344CCDD),         # low halves: a.b0 a.b1 b.b0 b.b1
    (0x7632, 0x1122AABB),         # high halves
    (0x0123, 0xDDCCBBAA),         # byte reverse of a
    (0x4444, 0x44444444),         # broadcast b.b0
])
def test_prmt_selectors(sel, expect):
    assert int(ptx.prmt(0xAABBCCDD, 0x11223344, sel)) == expect


def test_prmt_sign_replicate():
    # nibble bit 3 set: the selected byte's msb fills the byte
    assert int(ptx.prmt(0x00007F80, 0, 0x8880)) == 0xFFFFFF80   # byte0 = 0x80 (msb 1)
    assert int(ptx.prmt(0x00007F80, 0, 0x9990)) == 0x00000080   # byte1 = 0x7F (msb 0)
    assert int(ptx.prmt(0, 0x000000F0, 0xC000)) == 0xFF000000   # selector 0xC -> byte 4 (b.b0) sign


# ------------------------------------------------------------------ shfl.sync

def lanes(mode, b, width=32):
    j, _ = ptx.shfl_source_lane(mode, np.arange(32), b, ptx.shfl_c(mode, width))
    return j.tolist()


def test_shfl_modes_full_warp():
    assert lanes("bfly", 1) == [l ^ 1 for l in range(32)]
    assert lanes("bfly", 16) == [l ^ 16 for l in range(32)]
    assert lanes("down", 1) == [l + 1 for l in range(31)] + [31]      # lane 31 keeps its value
    assert lanes("up", 1) == [0] + list(range(31))                    # lane 0 keeps its value
    assert lanes("idx", 5) == [5] * 32


def test_shfl_segments():
    assert lanes("bfly", 8, width=16) == [l ^ 8 for l in range(32)]
    d = lanes("down", 4, width=8)
    assert d[2] == 6 and d[5] == 5 and d[8 + 3] == 15 and d[8 + 4] == 12
    assert lanes("idx", 3, width=8)[13] == 11                          # segment 8..15, lane 3
    u = lanes("up", 2, width=8)
    assert u[9] == 9 and u[10] == 8 and u[1] == 1


def test_shfl_values():
    v = np.arange(64, dtype=np.float32) * 10
    d, src = ptx.shfl("bfly", v, 2, ptx.shfl_c("bfly"))
    assert d[0] == 20 and d[33] == 350 and src[33] == 35


# ------------------------------------------------------------------ ldmatrix

def run_ldmatrix(smem_u16, row_addr, num, trans):
    src, off = ptx.ldmatrix_sources(num, trans, 32)
    addr = row_addr[src] + off                       # byte addresses [32, num, 2]
    halves = smem_u16[addr // 2]
    return halves                                    # [thread, reg, half] element values


def test_ldmatrix_x1_mapping():
    smem = np.arange(64, dtype=np.uint16)             # matrix[r][c] = 8r + c, rows 16 bytes apart
    rows = np.array([16 * (l % 8) for l in range(32)])
    h = run_ldmatrix(smem, rows, 1, False)
    for t in (0, 1, 5, 31):
        assert h[t, 0].tolist() == [8 * (t // 4) + 2 * (t % 4), 8 * (t // 4) + 2 * (t % 4) + 1]


def test_ldmatrix_row_addresses_come_from_lanes():
    # rows stored in reverse order: lane r points at row 7 - r, so thread t sees row 7 - t//4
    smem = np.arange(64, dtype=np.uint16)
    rows = np.array([16 * (7 - l % 8) for l in range(32)])
    h = run_ldmatrix(smem, rows, 1, False)
    assert h[0, 0].tolist() == [56, 57] and h[31, 0].tolist() == [6, 7]


def test_ldmatrix_x4_and_trans():
    smem = np.arange(4 * 64, dtype=np.uint16)        # 4 matrices, matrix j at elements 64j..
    rows = np.array([128 * (l // 8) + 16 * (l % 8) for l in range(32)])
    h = run_ldmatrix(smem, rows, 4, False)
    assert h[9, 3].tolist() == [192 + 8 * 2 + 2, 192 + 8 * 2 + 3]
    ht = run_ldmatrix(smem, rows, 4, True)
    # .trans: thread t gets (row 2*(t%4), col t//4) and (row 2*(t%4)+1, col t//4)
    for t, j in ((0, 0), (9, 1), (31, 3)):
        r0, c = 2 * (t % 4), t // 4
        assert ht[t, j].tolist() == [64 * j + 8 * r0 + c, 64 * j + 8 * (r0 + 1) + c]


def test_ldmatrix_rejects_bad_count():
    with pytest.raises(ValueError):
        ptx.ldmatrix_sources(3, False, 32)


# ------------------------------------------------------------------ mma fragments

def test_mma_f16_fragment_positions():
    ra, ca = ptx.mma_fragment("a", "m16n8k16", "f16")
    a = lambda lane, i: (int(ra[lane, i // 2, i % 2]), int(ca[lane, i // 2, i % 2]))  # a0..a7
    assert [a(0, i) for i in range(8)] == [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)]
    assert [a(5, i) for i in (0, 1, 2, 4, 6)] == [(1, 2), (1, 3), (9, 2), (1, 10), (9, 10)]
    rb, cb = ptx.mma_fragment("b", "m16n8k16", "f16")
    b = lambda lane, i: (int(rb[lane, i // 2, i % 2]), int(cb[lane, i // 2, i % 2]))
    assert [b(0, i) for i in range(4)] == [(0, 0), (1, 0), (8, 0), (9, 0)]
    assert [b(5, i) for i in range(4)] == [(2, 1), (3, 1), (10, 1), (11, 1)]
    rc, cc = ptx.mma_fragment("c", "m16n8k16", "f32")
    c = lambda lane, i: (int(rc[lane, i, 0]), int(cc[lane, i, 0]))
    assert [c(0, i) for i in range(4)] == [(0, 0), (0, 1), (8, 0), (8, 1)]
    assert [c(31, i) for i in range(4)] == [(7, 6), (7, 7), (15, 6), (15, 7)]


def test_mma_s8_fragment_positions():
    ra, ca = ptx.mma_fragment("a", "m16n8k32", "s8")
    a = lambda lane, i: (int(ra[lane, i // 4, i % 4]), int(ca[lane, i // 4, i % 4]))  # a0..a15
    assert [a(0, i) for i in (0, 3, 4, 7, 8, 11, 12, 15)] == [
        (0, 0), (0, 3), (8, 0), (8, 3), (0, 16), (0, 19), (8, 16), (8, 19)]
    assert a(6, 0) == (1, 8) and a(6, 13) == (9, 25)
    rb, cb = ptx.mma_fragment("b", "m16n8k32", "s8")
    b = lambda lane, i: (int(rb[lane, i // 4, i % 4]), int(cb[lane, i // 4, i % 4]))
    assert [b(0, i) for i in range(8)] == [(0, 0), (1, 0), (2, 0), (3, 0), (16, 0), (17, 0), (18, 0), (19, 0)]
    assert b(6, 0) == (8, 1) and b(6, 7) == (27, 1)


def pack_by_isa_text(A, B, C, kind):
    """Registers built from the ISA's per-element wording (independent of ptx.mma_fragment)."""
    a_regs, b_regs, c_vals = [], [], []
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        if kind == "16":
            a = [A[g + 8 * ((i // 2) % 2), t * 2 + (i & 1) + (8 if i >= 4 else 0)] for i in range(8)]
            b = [B[t * 2 + (i & 1) + (8 if i >= 2 else 0), g] for i in range(4)]
        elif kind == "32":  # k32, 8-bit
            a = [A[g + 8 * ((i // 4) % 2), t * 4 + (i & 3) + (16 if i >= 8 else 0)] for i in range(16)]
            b = [B[t * 4 + (i & 3) + (16 if i >= 4 else 0), g] for i in range(8)]
        else:  # k64, 4-bit: a0..a7 row g, a8..a15 row g+8, a16.. +32 columns (likewise b)
            a = [A[g + 8 * ((i // 8) % 2), t * 8 + (i & 7) + (32 if i >= 16 else 0)] for i in range(32)]
            b = [B[t * 8 + (i & 7) + (32 if i >= 8 else 0), g] for i in range(16)]
        c = [C[g + 8 * (i // 2), 2 * t + i % 2] for i in range(4)]
        a_regs.append(a)
        b_regs.append(b)
        c_vals.append(c)
    return np.array(a_regs), np.array(b_regs), np.array(c_vals)


def unpack_c(d):
    out = np.zeros((16, 8), d.dtype)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        for i in range(4):
            out[g + 8 * (i // 2), 2 * t + i % 2] = d[lane, i]
    return out


@pytest.mark.parametrize("ty,npdt", [("f16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_mma_m16n8k16_float(ty, npdt):
    rng = np.random.default_rng(3)
    A = rng.integers(-8, 9, (16, 16)).astype(npdt)
    B = rng.integers(-8, 9, (16, 8)).astype(npdt)
    C = rng.integers(-100, 100, (16, 8)).astype(np.float32)
    a, b, c = pack_by_isa_text(A, B, C, "16")
    a_regs = np.ascontiguousarray(a.astype(npdt)).view(np.uint32)      # [32, 4]
    b_regs = np.ascontiguousarray(b.astype(npdt)).view(np.uint32)      # [32, 2]
    d = ptx.mma("m16n8k16", "f32", ty, ty, "f32", a_regs, b_regs, c.astype(np.float32))
    np.testing.assert_array_equal(unpack_c(d), A.astype(np.float32) @ B.astype(np.float32) + C)


def test_mma_f16_accumulate():
    rng = np.random.default_rng(4)
    A = rng.integers(-3, 4, (16, 16)).astype(np.float16)
    B = rng.integers(-3, 4, (16, 8)).astype(np.float16)
    C = rng.integers(-5, 5, (16, 8)).astype(np.float16)
    a, b, c = pack_by_isa_text(A, B, C, "16")
    c_regs = np.ascontiguousarray(c.astype(np.float16)).view(np.uint32)  # f16x2: [32, 2]
    d = ptx.mma("m16n8k16", "f16", "f16", "f16", "f16",
                np.ascontiguousarray(a.astype(np.float16)).view(np.uint32),
                np.ascontiguousarray(b.astype(np.float16)).view(np.uint32), c_regs)
    d = np.ascontiguousarray(d).view(np.float16)                         # [32, 4]
    np.testing.assert_array_equal(unpack_c(d), (A.astype(np.float32) @ B.astype(np.float32) + C).astype(np.float16))


@pytest.mark.parametrize("ty,npdt,lo,hi", [("s8", np.int8, -128, 128), ("u8", np.uint8, 0, 256)])
def test_mma_m16n8k32_int8(ty, npdt, lo, hi):
    rng = np.random.default_rng(5)
    A = rng.integers(lo, hi, (16, 32)).astype(npdt)
    B = rng.integers(lo, hi, (32, 8)).astype(npdt)
    C = rng.integers(-1000, 1000, (16, 8)).astype(np.int32)
    a, b, c = pack_by_isa_text(A, B, C, "32")
    d = ptx.mma("m16n8k32", "s32", ty, ty, "s32",
                np.ascontiguousarray(a.astype(npdt)).view(np.uint32),
                np.ascontiguousarray(b.astype(npdt)).view(np.uint32), c.astype(np.int32))
    np.testing.assert_array_equal(unpack_c(d), A.astype(np.int64) @ B.astype(np.int64) + C)


def test_mma_m16n8k32_e4m3():
    """e4m3 x e4m3 + f32 (sm_89+): the products of the decoded codes summed with C, rounded once."""
    rng = np.random.default_rng(7)
    e4m3 = ml_dtypes.float8_e4m3fn
    A = (rng.standard_normal((16, 32)) * 40).astype(e4m3)
    B = (rng.standard_normal((32, 8)) * 40).astype(e4m3)
    C = rng.standard_normal((16, 8)).astype(np.float32)
    a, b, c = pack_by_isa_text(A.astype(np.float32), B.astype(np.float32), C, "32")
    d = ptx.mma("m16n8k32", "f32", "e4m3", "e4m3", "f32",
                np.ascontiguousarray(a.astype(e4m3)).view(np.uint32),
                np.ascontiguousarray(b.astype(e4m3)).view(np.uint32), c.astype(np.float32))
    want = (A.astype(np.float64) @ B.astype(np.float64) + C).astype(np.float32)
    np.testing.assert_array_equal(unpack_c(d), want)


def test_mma_m16n8k64_s4():
    """s4 x s4 + s32: eight sign-extended nibbles a register, element i in bits [4i, 4i + 4)."""
    rng = np.random.default_rng(8)
    A = rng.integers(-8, 8, (16, 64))
    B = rng.integers(-8, 8, (64, 8))
    C = rng.integers(-1000, 1000, (16, 8)).astype(np.int32)
    a, b, c = pack_by_isa_text(A, B, C, "64")

    def nibbles(v):                                       # [32, 8 r] codes -> [32, r] words
        v = (v.astype(np.uint32) & 0xF).reshape(32, -1, 8) << (4 * np.arange(8, dtype=np.uint32))
        return np.bitwise_or.reduce(v, axis=2).astype(np.uint32)

    d = ptx.mma("m16n8k64", "s32", "s4", "s4", "s32", nibbles(a), nibbles(b), c.astype(np.int32))
    np.testing.assert_array_equal(unpack_c(d), A @ B + C)


def test_mma_s32_wraps():
    A = np.full((16, 32), 127, np.int8)
    B = np.full((32, 8), 127, np.int8)
    C = np.full((16, 8), 2**31 - 1, np.int32)
    a, b, c = pack_by_isa_text(A, B, C, "32")
    d = ptx.mma("m16n8k32", "s32", "s8", "s8", "s32", np.ascontiguousarray(a.astype(np.int8)).view(np.uint32),
                np.ascontiguousarray(b.astype(np.int8)).view(np.uint32), c.astype(np.int32))
    assert int(unpack_c(d)[0, 0]) == np.int32(np.int64(2**31 - 1 + 32 * 127 * 127) - 2**32)


def test_mma_two_warps_are_independent():
    rng = np.random.default_rng(6)
    outs = []
    regs = []
    for w in range(2):
        A = rng.integers(-4, 5, (16, 16)).astype(np.float16)
        B = rng.integers(-4, 5, (16, 8)).astype(np.float16)
        a, b, c = pack_by_isa_text(A, B, np.zeros((16, 8), np.float32), "16")
        regs.append((np.ascontiguousarray(a.astype(np.float16)).view(np.uint32),
                     np.ascontiguousarray(b.astype(np.float16)).view(np.uint32), c.astype(np.float32)))
        outs.append(A.astype(np.float32) @ B.astype(np.float32))
    a, b, c = (np.concatenate([r[i] for r in regs]) for i in range(3))
    d = ptx.mma("m16n8k16", "f32", "f16", "f16", "f32", a, b, c)
    for w in range(2):
        np.testing.assert_array_equal(unpack_c(d[32 * w: 32 * w + 32]), outs[w])


def test_mma_m16n8k8_tf32_truncates_low_mantissa_bits():
    rng = np.random.default_rng(7)
    A = rng.integers(-8, 9, (16, 8)).astype(np.float32)
    B = rng.integers(-8, 9, (8, 8)).astype(np.float32)
    A[0, 0] = 1.0 + 2.0 ** -20          # below tf32's 10 mantissa bits: read as 1.0
    a_regs = np.zeros((32, 4), np.float32)
    b_regs = np.zeros((32, 2), np.float32)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        # PTX ISA m16n8k8 .tf32: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); b0 (t, g), b1 (t+4, g)
        a_regs[lane] = [A[g, t], A[g + 8, t], A[g, t + 4], A[g + 8, t + 4]]
        b_regs[lane] = [B[t, g], B[t + 4, g]]
    d = ptx.mma("m16n8k8", "f32", "tf32", "tf32", "f32", a_regs, b_regs, np.zeros((32, 4), np.float32))
    At = A.copy()
    At[0, 0] = 1.0
    np.testing.assert_array_equal(unpack_c(d), At @ B)


def test_mma_m16n8k8_f16():
    rng = np.random.default_rng(8)
    A = rng.integers(-8, 9, (16, 8)).astype(np.float16)
    B = rng.integers(-8, 9, (8, 8)).astype(np.float16)
    a = np.zeros((32, 4), np.float16)
    b = np.zeros((32, 2), np.float16)
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        # PTX ISA m16n8k8 .f16: a0,a1 (g, 2t+{0,1}), a2,a3 (g+8, 2t+{0,1}); b0,b1 (2t+{0,1}, g)
        a[lane] = [A[g, 2 * t], A[g, 2 * t + 1], A[g + 8, 2 * t], A[g + 8, 2 * t + 1]]
        b[lane] = [B[2 * t, g], B[2 * t + 1, g]]
    d = ptx.mma("m16n8k8", "f32", "f16", "f16", "f32", a.view(np.uint32), b.view(np.uint32),
                np.zeros((32, 4), np.float32))
    np.testing.assert_array_equal(unpack_c(d), A.astype(np.float32) @ B.astype(np.float32))


# bytes of {b, a}: a = 0x33221100 (bytes 0..3 = 00 11 22 33), b = 0x77665544 (bytes 4..7)
PA, PB = 0x33221100, 0x77665544


@pytest.mark.parametrize("mode,c,expect", [
    ("f4e", 0, 0x33221100), ("f4e", 1, 0x44332211), ("f4e", 3, 0x66554433),
    ("b4e", 0, 0x55667700), ("b4e", 3, 0x00112233),
    ("rc8", 2, 0x22222222), ("ecl", 1, 0x33221111), ("ecr", 2, 0x22221100),
    ("rc16", 1, 0x33223322), ("rc16", 2, 0x11001100), ("ecr", 1, 0x11111100), ("ecl", 3, 0x33333333),
    ("f4e", 5, 0x44332211),                      # only c[1:0] counts
])
def test_prmt_modes(mode, c, expect):
    assert int(ptx.prmt(PA, PB, c, mode)) == expect
