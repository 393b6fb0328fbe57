"""The ``lookup`` instruction (``table[index]`` from a 1-D shared table): its semantics against
numpy, the error for an index outside the table, the verifier's typing rules at the user's
line, and the text round trip."""
import numpy as np
import pytest
import torch

import tilus
from tilus.errors import InterpreterError, ScriptError


class Gather(tilus.Script):
    def __init__(self, table_dtype=tilus.float32, table_shape=(40,), index_dtype=tilus.int32):
        super().__init__()
        self.table_dtype, self.index_dtype = table_dtype, index_dtype
        self.table_shape = list(table_shape)

    def __call__(self, t: ~tilus.float32, i: ~tilus.int32, y: ~tilus.float32):
        self.attrs.blocks = [1]
        self.attrs.warps = 1
        gt = self.global_view(t, dtype=tilus.float32, shape=[40])
        gi = self.global_view(i, dtype=tilus.int32, shape=[3, 50])
        gy = self.global_view(y, dtype=tilus.float32, shape=[3, 50])
        table = self.shared_tensor(dtype=self.table_dtype, shape=self.table_shape)
        values = self.cast(self.load_global(gt, offsets=[0], shape=[40]), dtype=self.table_dtype)
        self.store_shared(table, self.view(values, shape=self.table_shape))
        idx = self.load_global(gi, offsets=[0, 0], shape=[3, 50])
        self.store_global(gy, self.lookup(table, self.cast(idx, dtype=self.index_dtype)),
                          offsets=[0, 0])
        self.free_shared(table)


def test_lookup_is_numpy_fancy_indexing():
    rng = np.random.default_rng(0)
    table = torch.from_numpy(rng.standard_normal(40).astype(np.float32))
    index = torch.from_numpy(rng.integers(0, 40, (3, 50)).astype(np.int32))
    out = torch.zeros(3, 50)
    tilus.interpret(Gather(), table, index, out)
    assert np.array_equal(out.numpy(), table.numpy()[index.numpy()])


def test_index_outside_the_table_is_an_error():
    index = torch.zeros(3, 50, dtype=torch.int32)
    index[2, 7] = 40
    with pytest.raises(InterpreterError, match=r"index 40 at \[2, 7\].*of 40 elements"):
        tilus.interpret(Gather(), torch.zeros(40), index, torch.zeros(3, 50))


@pytest.mark.parametrize("kw, message", [
    (dict(table_shape=(4, 10)), "must be a 1-D shared tensor of a 32-bit type"),
    (dict(table_dtype=tilus.float16), "must be a 1-D shared tensor of a 32-bit type"),
    (dict(index_dtype=tilus.int16), "must be int32"),
])
def test_verifier_rejects_bad_operands_at_the_users_line(kw, message):
    with pytest.raises(ScriptError, match=message) as e:
        Gather(**kw).program()
    assert "self.lookup(" in str(e.value)


def test_text_round_trip():
    p = Gather().program()
    assert "lookup(%table," in str(p)
    assert tilus.ir.parse(str(p)) == p
