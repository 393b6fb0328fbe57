"""Parse errors: always a TilusParseError, located at the right line, saying what went wrong."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tilus.errors import TilusParseError, VerificationError
from tilus.ir import parse

from .programs import matmul_program

TEXT = str(matmul_program())
LINES = TEXT.splitlines()


def line_of(fragment: str) -> int:
    return next(i + 1 for i, line in enumerate(LINES) if fragment in line)


def parse_error(text: str) -> TilusParseError:
    with pytest.raises(TilusParseError) as e:
        parse(text)
    return e.value


def replaced(old: str, new: str) -> str:
    assert old in TEXT
    return TEXT.replace(old, new, 1)


@pytest.mark.parametrize("cut", [10, 200, 555, 700, len(TEXT) - 3])
def test_truncated_text(cut):
    text = TEXT[:cut]
    e = parse_error(text)
    assert e.line == text.count("\n") + 1
    assert "end of text" in str(e) or "unexpected" in str(e)


def test_truncated_inside_a_loop_says_what_was_expected():
    text = TEXT[:TEXT.index("sync()") + len("sync()")]
    e = parse_error(text)
    assert "unexpected end of text" in str(e) and "'}'" in str(e)


def test_wrong_type_name():
    e = parse_error(replaced("%sa: shared[float16", "%sa: shared[float9"))
    assert e.line == line_of("%sa: shared") and "float9" in str(e)
    e = parse_error(replaced("m: int32", "m: int33"))
    assert e.line == 1 and "int33" in str(e)


def test_undefined_variable():
    e = parse_error(replaced("offsets=[kk * 16, blockIdx.y * 8]", "offsets=[kk * 16, jj * 8]"))
    assert e.line == line_of("copy_async(%sb") and "undefined variable 'jj'" in str(e)


def test_loop_variable_out_of_scope():
    e = parse_error(replaced("offsets=[blockIdx.x * 16, blockIdx.y * 8]", "offsets=[kk, 0]"))
    assert e.line == line_of("store_global") and "'kk'" in str(e)


def test_undefined_tensor():
    e = parse_error(replaced("%acc = dot(%xa, %xbf, %acc)", "%acc = dot(%xa, %xbg, %acc)"))
    assert e.line == line_of("%acc = dot") and "%xbg" in str(e)
    e = parse_error(replaced("%out: register[float16, (16, 8)] = cast(%acc)",
                             "%out: register[float16, (16, 8)] = cast(%xa)"))
    assert e.line == line_of("%out:") and "%xa" in str(e)  # defined inside the loop only


def test_unknown_instruction():
    e = parse_error(replaced("load_shared(%sa)", "load_sharde(%sa)"))
    assert e.line == line_of("%xa:") and "unknown instruction 'load_sharde'" in str(e)
    assert "load_shared" in str(e)


def test_bad_attribute_name_and_value():
    e = parse_error(replaced("copy_async_wait_group(n=0)", "copy_async_wait_group(m=0)"))
    assert e.line == line_of("copy_async_wait_group") and "unknown attribute 'm'" in str(e)
    e = parse_error(replaced("copy_async_wait_group(n=0)", "copy_async_wait_group(n=kk)"))
    assert e.line == line_of("copy_async_wait_group") and "integer" in str(e)
    e = parse_error(replaced("copy_async_wait_group(n=0)", "copy_async_wait_group(n=0, n=1)"))
    assert "twice" in str(e)
    e = parse_error(replaced("load_shared(%sb)", "load_shared(%sb, %sa)"))
    assert e.line == line_of("%xb:") and "positional" in str(e)
    e = parse_error(replaced("copy_async_wait_group(n=0)", "copy_async_wait_group()"))
    assert "needs n" in str(e)


def test_output_mismatches():
    e = parse_error(replaced("    sync()", "    %z: register[int8, (1,)] = sync()"))
    assert "no output" in str(e)
    e = parse_error(replaced("%xa: register[float16, (16, 16)] = load_shared(%sa)", "load_shared(%sa)"))
    assert "produces a tensor" in str(e)


def test_bad_scope_shape_and_expressions():
    e = parse_error(replaced("%sa: shared[", "%sa: local["))
    assert "unknown memory scope 'local'" in str(e)
    e = parse_error(replaced("shared[float16, (16, 16)]", "shared[float16, (16, k)]"))
    assert "integer constant" in str(e)
    e = parse_error(replaced("cdiv(k, 16)", "cdiv(k, 16) / 2"))
    assert "'/' on integers" in str(e) and e.line == line_of("for kk")
    e = parse_error(replaced("cdiv(k, 16)", "sum(k, 16)"))
    assert "unknown function 'sum'" in str(e)
    e = parse_error(replaced("blockIdx.y * 8]", "blockIdx.w * 8]"))
    assert "blockIdx" in str(e)
    e = parse_error(replaced("cdiv(k, 16)", "cdiv(a, 16)"))
    assert "pointer" in str(e)


def test_semantic_errors_are_located_parse_errors():
    e = parse_error(replaced("%xbf: register[float16, (16, 8)] = cast(%xb)",
                             "%xbf: register[float32, (16, 8)] = cast(%xb)"))
    assert isinstance(e, VerificationError)  # a ParseVerificationError is both
    assert e.line == line_of("%acc = dot") and "dot" in str(e)
    e = parse_error(replaced("warps 1", "warps 64"))
    assert e.line == 2 and "warps" in str(e)
    assert parse(replaced("warps 1", "warps 64"), verify=False).warps == 64


def test_unexpected_character():
    e = parse_error(replaced("%sb: shared", "%sb: $shared"))
    assert e.line == line_of("%sb: ") and "'$'" in str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text())
def test_random_text_gives_only_parse_errors(text):
    with pytest.raises(TilusParseError):
        parse(text)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, len(TEXT)), st.integers(0, 12), st.text(max_size=4))
def test_mutated_programs_parse_or_fail_with_parse_errors(start, length, insert):
    text = TEXT[:start] + insert + TEXT[start + length:]
    try:
        parse(text)
    except TilusParseError as e:
        assert e.line is None or 1 <= e.line <= text.count("\n") + 1


def test_bad_grid_is_located_at_blocks():
    e = parse_error(replaced("blocks [cdiv(m, 16), cdiv(n, 8)]", "blocks [cdiv(m, 16), blockIdx.x]"))
    assert e.line == 2 and e.column == 13 and "blockIdx" in str(e)  # the first grid size


def _deep_text(levels: int, loops: int = 0) -> str:
    expr = "n"
    for j in range(levels - 1):
        expr = f"({expr} + 1)" if j % 2 else f"({expr} ^ n)"
    head = "".join(f"for i{j} in range(0, 4, 1) {{\n" for j in range(loops))
    return (f"kernel k(n: int32)\n    blocks [1] warps 1\n{{\n{head}let k: int32 = {expr}\n"
            + "}\n" * loops + "}\n")


def test_the_parser_enforces_the_verifiers_depth_limit():
    from tilus.ir.verifier import MAX_DEPTH

    p = parse(_deep_text(MAX_DEPTH))
    assert parse(str(p)) == p
    for levels, loops in ((MAX_DEPTH + 1, 0), (MAX_DEPTH, 1), (1000, 0), (5000, 0)):
        with pytest.raises(TilusParseError, match=f"nests more than {MAX_DEPTH} levels deep") as e:
            parse(_deep_text(levels, loops))
        assert e.value.line == 4 + loops
