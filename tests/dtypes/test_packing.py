"""pack/unpack and the 32-bit word forms: bit order by hand, a big-int reference, numpy == torch."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tilus import dtypes
from tests.dtypes.oracles import reference_pack

# Worked out by hand: element i at bits [i*K, (i+1)*K), bit j of the stream = bit j%8 of byte j//8.
HAND = {
    1: ([1, 0, 1, 1, 0, 0, 0, 1, 1], [0x8D, 0x01]),      # bits 0..7 = 1,0,1,1,0,0,0,1
    2: ([1, 2, 3, 0, 3], [0x39, 0x03]),                  # 01 | 10<<2 | 11<<4 | 00<<6 = 0b00111001
    3: ([1, 2, 3, 4, 5, 6, 7, 0], [0xD1, 0x58, 0x1F]),
    4: ([0x1, 0x2, 0x3], [0x21, 0x03]),                  # low nibble first
    5: ([31, 1, 0, 17], [0x3F, 0x80, 0x08]),             # 17 = 0b10001 at bits 15 and 19
    6: ([0x3F, 0x01, 0x20], [0x7F, 0x00, 0x02]),         # 0x20 of element 2 is stream bit 17
    7: ([0x7F, 0x55], [0xFF, 0x2A]),                     # 0x55 at bits 7, 9, 11, 13
    8: ([0x12, 0xAB], [0x12, 0xAB]),
}


@pytest.mark.parametrize("k", sorted(HAND))
def test_bit_order_by_hand(k):
    codes, want = HAND[k]
    t = dtypes.integer_type(k, signed=False)
    got = dtypes.pack(np.array(codes, np.uint8), t)
    assert got.dtype == np.uint8 and got.tolist() == want
    assert list(reference_pack(codes, k)) == want            # the reference agrees with the hand
    assert dtypes.pack(torch.tensor(codes, dtype=torch.uint8), k).tolist() == want
    np.testing.assert_array_equal(dtypes.unpack(np.array(want, np.uint8), t, len(codes)), codes)


def test_words_by_hand():
    words = dtypes.pack_words(np.array([1, 2, 3, 4, 5, 6, 7, 0], np.uint8), "uint3")
    assert words.dtype == np.uint32 and words.tolist() == [0x001F58D1]
    words = dtypes.pack_words(np.arange(1, 10, dtype=np.uint8), "uint4")   # 9 nibbles: 2 words
    assert words.tolist() == [0x87654321, 0x9]


codes_k = st.integers(1, 8).flatmap(
    lambda k: st.tuples(st.just(k), st.lists(st.integers(0, (1 << k) - 1), max_size=70)))


@settings(max_examples=150, deadline=None)
@given(codes_k)
def test_pack_matches_reference_and_round_trips(kc):
    k, codes = kc
    arr = np.array(codes, np.uint8)
    packed = dtypes.pack(arr, k)
    assert packed.tobytes() == reference_pack(codes, k)
    assert packed.size == (len(codes) * k + 7) // 8 == dtypes.packed_nbytes(len(codes), k)
    np.testing.assert_array_equal(dtypes.unpack(packed, k, len(codes)), arr)
    tp = dtypes.pack(torch.from_numpy(arr), k)
    assert tp.dtype == torch.uint8 and tp.numpy().tobytes() == packed.tobytes()
    tu = dtypes.unpack(tp, k, len(codes))
    assert tu.dtype == torch.uint8 and tu.tolist() == codes
    words = dtypes.pack_words(arr, k)
    padded = np.zeros(-(-packed.size // 4) * 4, np.uint8)
    padded[:packed.size] = packed
    np.testing.assert_array_equal(words, padded.view("<u4"))
    np.testing.assert_array_equal(dtypes.unpack_words(words, k, len(codes)), arr)
    tw = dtypes.pack_words(torch.from_numpy(arr), k)
    assert tw.dtype == torch.int32 and tw.numpy().view(np.uint32).tolist() == words.tolist()
    assert dtypes.unpack_words(tw, k, len(codes)).tolist() == codes


@pytest.mark.parametrize("k", range(1, 9))
def test_long_random_streams(k):
    rng = np.random.default_rng(k)
    codes = rng.integers(0, 1 << k, 1001, dtype=np.uint8)      # not a multiple of 8
    packed = dtypes.pack(codes, k)
    assert packed.tobytes() == reference_pack(codes.tolist(), k)
    # padding bits of the last byte are zero
    used = (1001 * k) % 8
    if used:
        assert packed[-1] >> used == 0
    np.testing.assert_array_equal(dtypes.unpack(packed, k, 1001), codes)
    # a longer buffer is fine: only the first ceil(n*K/8) bytes are read
    np.testing.assert_array_equal(dtypes.unpack(np.append(packed, np.uint8(0xFF)), k, 1001), codes)


def test_nd_flattens_row_major_and_shape_restores():
    codes = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 8
    packed = dtypes.pack(codes, dtypes.uint3)
    np.testing.assert_array_equal(packed, dtypes.pack(codes.reshape(-1), "uint3"))
    back = dtypes.unpack(packed, "uint3", shape=(2, 3, 4))
    assert back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, codes)
    np.testing.assert_array_equal(dtypes.unpack(packed.reshape(3, 3), "uint3", 24), codes.reshape(-1))
    tb = dtypes.unpack(torch.from_numpy(packed), "uint3", shape=(2, 12))
    assert tuple(tb.shape) == (2, 12)
    # a non-contiguous view packs like its row-major copy
    np.testing.assert_array_equal(dtypes.pack(codes.T, "uint3"), dtypes.pack(codes.T.copy(), "uint3"))
    assert dtypes.pack(torch.from_numpy(codes).transpose(0, 2), 3).tolist() == \
        dtypes.pack(codes.transpose(2, 1, 0).copy(), 3).tolist()


def test_types_and_names_work_as_widths():
    codes = np.array([7, 0, 15], np.uint8)
    want = dtypes.pack(codes, 4)
    for spec in ("uint4", "int4", dtypes.float4_e2m1, dtypes.get("float4_e3m0")):
        np.testing.assert_array_equal(dtypes.pack(codes, spec), want)


def test_codes_from_encode_pack_directly():
    t = dtypes.int4
    values = np.array([-8, -1, 0, 7, 3])
    packed = dtypes.pack(t.encode(values), t)
    np.testing.assert_array_equal(t.decode(dtypes.unpack(packed, t, 5)), values)
    assert dtypes.pack([1, 2, 3], "uint2").tolist() == [0b111001]   # a list of ints is fine


@pytest.mark.parametrize("k,np_dtype,torch_dtype", [(16, np.uint16, torch.int16),
                                                    (32, np.uint32, torch.int32),
                                                    (64, np.uint64, torch.int64)])
def test_wide_types_are_little_endian_bytes(k, np_dtype, torch_dtype):
    codes = np.array([1, 0x1234 if k == 16 else 0x12345678, np.iinfo(np_dtype).max], np_dtype)
    packed = dtypes.pack(codes, k)
    assert packed.tobytes() == codes.astype(np.dtype(np_dtype).newbyteorder("<")).tobytes()
    assert packed.tobytes() == reference_pack([int(c) for c in codes], k)
    back = dtypes.unpack(packed, k, 3)
    assert back.dtype == np_dtype and back.tolist() == codes.tolist()
    tcodes = torch.from_numpy(codes.view(np.dtype(torch_dtype.__str__().split(".")[1])))
    assert dtypes.pack(tcodes, k).numpy().tobytes() == packed.tobytes()
    tb = dtypes.unpack(torch.from_numpy(packed), k, 3)
    assert tb.dtype == torch_dtype and tb.numpy().tobytes() == codes.tobytes()
    np.testing.assert_array_equal(dtypes.pack(np.array([5], np.uint8), k),
                                  dtypes.pack(np.array([5], np_dtype), k))


def test_empty():
    assert dtypes.pack(np.zeros(0, np.uint8), 3).shape == (0,)
    assert dtypes.unpack(np.zeros(0, np.uint8), 3, 0).shape == (0,)
    assert dtypes.pack_words(np.zeros(0, np.uint8), 3).shape == (0,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_the_device():
    rng = np.random.default_rng(0)
    for k in range(1, 9):
        codes = rng.integers(0, 1 << k, 777, dtype=np.uint8)
        dev = torch.from_numpy(codes).cuda()
        packed = dtypes.pack(dev, k)
        assert packed.is_cuda and packed.cpu().numpy().tobytes() == dtypes.pack(codes, k).tobytes()
        back = dtypes.unpack(packed, k, 777)
        assert back.is_cuda and back.cpu().numpy().tolist() == codes.tolist()
        words = dtypes.pack_words(dev, k)
        assert words.is_cuda and dtypes.unpack_words(words, k, 777).cpu().numpy().tolist() == codes.tolist()
