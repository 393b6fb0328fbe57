"""examples/attention_decode.py runs through the interpreter and matches torch (the example
asserts its error against the dequantized reference; here also the float one is bounded)."""
from tests.examples.test_examples import load


def test_attention_decode_example(capsys):
    load("attention_decode").main()
    out = capsys.readouterr().out
    assert out.count("attention_decode") == 6 and "lengths [39, 7, 62]" in out


def test_attention_decode_uint8_tracks_float_attention():
    for _, exact, ref in load("attention_decode").run("uint8", steps=1, lengths=(3, 33)):
        assert exact < 3e-2 and ref < 5e-3


def test_paged_example_with_32_token_pages_equals_the_contiguous_cache():
    """Pages of 32 tokens: the paged kernel runs the contiguous kernel's 32-token tiles in the
    same order, so the outputs agree bit for bit."""
    steps = load("attention_decode_paged").run("int8", steps=2, page_size=32)
    assert [lens for lens, *_ in steps] == [[31, 6, 48], [32, 7, 49]]
    assert all(flat == 0.0 and ref < 5e-3 for _, _, ref, flat in steps)
