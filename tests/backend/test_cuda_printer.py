"""Tilus' CUDA printer (tilus.backend.cuda_printer) against TVM's pipeline and printer: the same
kernels compile to SASS whose main loops cost the same (within a few instructions), with the same
tensor-core and memory instructions; the host launcher TVM generates from the launcher stub
passes exactly the printed kernel's parameters; what the printer cannot print is a
CompilationError. The printed expressions' semantics are checked against the simulator in
test_cuda_printer_semantics.py."""
from collections import Counter

import pytest

from tilus.backend.build_program import build
from tilus.backend.sass_cost import main_loop_cost, parse
from tilus.errors import CompilationError

KEY_OPCODES = ("HMMA", "IMMA", "LDSM", "LDGSTS", "BAR")


def _both(kernel_factory, arch):
    return {p: build(kernel_factory(), arch=arch, printer=p) for p in ("tilus", "tvm")}


def _key_counts(loop) -> Counter:
    return Counter({op: n for op, n in Counter(i.split()[1].split(".")[0] for i in loop.path).items()
                    if op in KEY_OPCODES})


@pytest.mark.parametrize("arch,kernel", [
    ("sm_90", "decode"),          # the uint4 decode QuantMatmul's main loop: the weight format's cost
    ("sm_80", "w8a8"),            # int8 x int8, split-k
])
def test_main_loop_costs_what_tvm_s_costs(need_nvcc, need_disassembler, arch, kernel):
    from tilus.ops import w8a8
    from tilus.ops.kernels import QuantMatmul

    factory, marks = {
        "decode": (lambda: QuantMatmul("uint4", 128, zero_mode="tensor", block_m=16, block_k=256,
                                       split_k=2, stages=2), ("HMMA",)),
        "w8a8": (lambda: w8a8.MatmulW8A8(has_bias=True, split_k=2), ("IMMA",)),
    }[kernel]
    built = _both(factory, arch)
    ours, tvm = (main_loop_cost(built[p].sass, markers=marks) for p in ("tilus", "tvm"))
    assert _key_counts(ours) == _key_counts(tvm)
    assert ours.global_bytes == tvm.global_bytes
    assert ours.instructions <= tvm.instructions * 1.05, (ours.by_class, tvm.by_class)
    r, rt = built["tilus"].resources, built["tvm"].resources
    print(kernel, "instructions", ours.instructions, tvm.instructions, "registers", r.registers,
          rt.registers)
    assert not r.spills and r.registers <= max(rt.registers * 1.15, 64)


def test_every_instruction_class_of_the_examples_is_kept(need_nvcc, need_disassembler):
    """Whole kernels (not only main loops): the same mma, ldmatrix, cp.async, shuffle and
    barrier counts as TVM's CUDA gives."""
    from tests.backend.test_tvm_pipeline import _kernels

    for name in ("softmax", "matmul_lowbit_uint3", "attention_split_uint4"):
        built = _both(_kernels()[name], "sm_90")
        counts = {p: Counter(i.base for i in parse(b.sass)) for p, b in built.items()}
        for op in (*KEY_OPCODES, "SHFL", "MUFU"):
            assert counts["tilus"][op] == counts["tvm"][op], (name, op)


def test_launcher_stub_passes_the_printed_parameters():
    """TVM's launcher for the stub takes what the printed kernel takes (grid extents included:
    the MoE kernel's grid is num_tiles, which its body never reads)."""
    from tests.gpu.kernels import moe_kernels
    from tests.backend.test_tvm_pipeline import _kernels
    from tilus.backend import tvm_shim
    from tilus.backend.build_program import as_program, prepare
    from tilus.backend.codegen import lower_program
    from tilus.backend.cuda_printer import print_cuda
    from tilus.backend.launcher_stub import check_signature, launcher_stub, signature

    kernels = [_kernels()["vector_add"](), _kernels()["quant_matmul_int4_bf16"](), moe_kernels()[0]]
    for kernel in kernels:
        func = lower_program(prepare(as_program(kernel), "sm_90")).prim_func
        printed = print_cuda(func)
        stub = tvm_shim.cuda_source(tvm_shim.compile_module(launcher_stub(func, printed), "sm_90"))
        check_signature(stub, printed)
        assert signature(printed.source, printed.name) == [p.name for p in printed.params]
        dropped = type(printed)(printed.source, printed.name, printed.params[1:])
        with pytest.raises(CompilationError, match="host launcher"):
            check_signature(stub, dropped)


def test_views_are_declared_over_their_root():
    """A shared tensor's vector view names the pool and the tensor's offset (the lowering), and
    a view over a view at an offset -- read differently by TVM and by the simulator -- is
    refused by the printer."""
    from tilus.backend.build_program import as_program, prepare
    from tilus.backend.codegen import lower_program
    from tilus.backend.cuda_printer import print_cuda
    from tilus.ops.kernels import QuantMatmul

    # uint1 weights: the weight tile sits after the activation tiles, 32 KiB into the pool
    kernel = QuantMatmul("uint1", 128, zero_mode="tensor", block_k=256, split_k=4, stages=4)
    func = lower_program(prepare(as_program(kernel), "sm_90")).prim_func
    views = [ln.strip() for ln in func.script().splitlines()
             if "sw_uint32 = T.decl_buffer" in ln]
    assert views == ['sw_uint32 = T.decl_buffer((4096,), "uint32", data=smem.data, '
                     'elem_offset=8192, scope="shared.dyn")']
    assert "((unsigned int*)smem)[(8192 + " in print_cuda(func).source

    with pytest.raises(CompilationError, match="starts at an offset"):
        print_cuda(_view_of_an_offset_view())


def _view_of_an_offset_view():
    """A uint32 view declared over a uint8 view that starts 64 bytes into the pool."""
    from tilus.backend.tvm_shim import T

    @T.prim_func
    def nested_view(out: T.Buffer((4,), "uint32")):
        for tx in T.thread_binding(32, thread="threadIdx.x"):
            pool = T.alloc_buffer((256,), "uint8", scope="shared.dyn")
            inner = T.decl_buffer((64,), "uint8", data=pool.data, elem_offset=64,
                                  scope="shared.dyn")
            words = T.decl_buffer((16,), "uint32", data=inner.data, scope="shared.dyn")
            out[0] = words[tx % 16]

    return nested_view


def test_printer_choice_is_checked_and_keyed(monkeypatch):
    from tests.backend.test_tvm_pipeline import _kernels
    from tilus.runtime.keys import key_versions

    with pytest.raises(CompilationError, match="unknown CUDA printer 'gcc'"):
        build(_kernels()["vector_add"](), arch="sm_90", printer="gcc")
    default = key_versions()
    monkeypatch.setenv("TILUS_CUDA_PRINTER", "tvm")
    assert key_versions() != default and key_versions()["printer"] == "tvm"


def _sass_text(source: str, arch: str) -> str:
    """The SASS nvcc makes of ``source``, without the instruction addresses."""
    import re

    from tilus.backend.toolchain import compile_cuda, disassemble

    sass = disassemble(compile_cuda(source, arch, compiler="nvcc").cubin)
    return "\n".join(re.sub(r"/\*[0-9a-f]{4,}\*/", "", ln) for ln in sass.splitlines()
                     if ln.strip().startswith("/*"))


def _struct_helpers() -> dict:
    """The word helpers written with CUDA's own half2 / nv_bfloat162 structs and operators (what
    the printer printed before, bit-cast through the prelude's union): name -> source."""
    from tilus.backend.cuda_printer import WORD_HELPERS

    ops = {"add": "+", "sub": "-", "mul": "*"}
    out = {}
    for name in WORD_HELPERS:
        vec, make, scalar = (("half2", "make_half2", "half") if name.startswith("tilus_h") else
                             ("nv_bfloat162", "make_bfloat162", "nv_bfloat16"))
        if name.endswith("pair_u32"):
            body = f"return tilus_bitcast<unsigned int, {vec}>({make}(v, v));"
            params = f"{scalar} v"
        else:
            op = ops[name[len("tilus_h"):-len("2_u32")]]
            body = (f"return tilus_bitcast<unsigned int, {vec}>(tilus_bitcast<{vec}, unsigned int>(a)"
                    f" {op} tilus_bitcast<{vec}, unsigned int>(b));")
            params = "unsigned int a, unsigned int b"
        out[name] = (f"__device__ __forceinline__ unsigned int {name}({params}) {{\n  {body}\n}}\n")
    return out


def _with_struct_helpers(source: str) -> str:
    from tilus.backend.cuda_printer import WORD_HELPERS

    for name, word_form in WORD_HELPERS.items():
        source = source.replace(word_form, _struct_helpers()[name])
    return source


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_word_helpers_compile_to_what_cuda_s_operators_compile_to(need_nvcc, need_disassembler, arch):
    """Every float16x2 / bfloat16x2 word helper (add, sub, mul: the PTX of CUDA's __hadd2 ...,
    which differs between sm_80 and sm_90 for bfloat16; the broadcast pair, used as the lowering
    uses it: an operand of a half2 operation) gives the SASS that CUDA's struct operators give,
    in one kernel using them all (with __restrict__ pointers, as the printer declares them)."""
    from tilus.backend.cuda_printer import PRELUDE, PRELUDE_BFLOAT16, PRELUDE_FLOAT16, WORD_HELPERS

    body = []
    for i, name in enumerate(WORD_HELPERS):
        if name.endswith("pair_u32"):
            mul, scalars = (("tilus_hmul2_u32", "h") if name.startswith("tilus_h")
                            else ("tilus_bmul2_u32", "bh"))
            call = f"{mul}(a[threadIdx.x], {name}({scalars}[threadIdx.x + {i}]))"
        else:
            call = f"{name}(a[threadIdx.x], b[threadIdx.x + {i}])"
        body.append(f"  out[{len(WORD_HELPERS)} * threadIdx.x + {i}] = {call};")
    kernel = ('extern "C" __global__ void words(const unsigned int* __restrict__ a, '
              'const unsigned int* __restrict__ b, const half* __restrict__ h, '
              'const nv_bfloat16* __restrict__ bh, unsigned int* __restrict__ out) {\n'
              + "\n".join(body) + "\n}\n")
    word_source = "\n".join([PRELUDE, PRELUDE_FLOAT16, PRELUDE_BFLOAT16, *WORD_HELPERS.values(),
                             kernel])
    struct_source = _with_struct_helpers(word_source)
    assert "asm(" in word_source and "asm(" not in struct_source
    assert _sass_text(word_source, arch) == _sass_text(struct_source, arch)


def test_decode_dequantization_uses_words_not_half2_structs(need_nvcc, need_disassembler):
    """The uint4 decode kernel's dequantization (sub of the magic number, broadcast of a scale)
    is printed on 32-bit words -- no half2 struct, no bit cast in the kernel -- and compiles to
    the SASS of the same source with CUDA's half2 operators; an fp32 kernel includes neither
    cuda_fp16.h nor cuda_bf16.h, a bfloat16 one only cuda_bf16.h."""
    from tests.backend.test_tvm_pipeline import _kernels
    from tilus.backend.build_program import as_program, prepare
    from tilus.backend.codegen import lower_program
    from tilus.backend.cuda_printer import print_cuda
    from tilus.ops.kernels import QuantMatmul

    def printed(kernel, arch="sm_90"):
        return print_cuda(lower_program(prepare(as_program(kernel), arch)).prim_func).source

    source = printed(QuantMatmul("uint4", 128, zero_mode="tensor", block_k=256, split_k=2))
    body = source[source.index('extern "C"'):]
    assert "half2" not in body and "tilus_bitcast" not in body
    assert "tilus_hsub2_u32(" in body and "tilus_hpair_u32(" in body
    assert _sass_text(source, "sm_90") == _sass_text(_with_struct_helpers(source), "sm_90")
    # MXFP4: pairs of scales decoded from bits (where shifting and or-ing the bits gave other SASS)
    mx = printed(_block_scaled_decode("mx", "sm_90"))
    assert "tilus_hmul2_u32(" in mx and "tilus_hpair_u32(" in mx
    assert _sass_text(mx, "sm_90") == _sass_text(_with_struct_helpers(mx), "sm_90")

    assert "cuda_fp16.h" not in printed(_kernels()["vector_add"]())
    assert "cuda_bf16.h" not in printed(_kernels()["vector_add"]())
    bf16 = printed(_kernels()["quant_matmul_int4_bf16"]())
    assert "#include <cuda_bf16.h>" in bf16 and "#include <cuda_fp16.h>" not in bf16


def _block_scaled_decode(scheme: str, arch: str):
    """The kernel tilus.ops.compile_matmul builds for a float4_e2m1 weight at M=1."""
    import torch

    import tilus
    from tilus.ops.matmul import _ACT, heuristic_schedule, kernel_for, weight_meta
    from tilus.transforms.shared_memory import max_shared_memory_bytes

    qw = tilus.ops.quantize(torch.linspace(-1, 1, 4096 * 4096).reshape(4096, 4096), "float4_e2m1",
                            scheme=scheme)
    meta = weight_meta(qw, torch.float16)
    schedule = heuristic_schedule(meta, 1, qw.n, qw.k, 132, max_shared_memory_bytes(arch))
    return kernel_for(meta, _ACT[torch.float16], False, schedule)


def test_loops_print_the_unrolling_they_ask_for(need_nvcc):
    """``self.range(..., unroll=n)`` prints ``#pragma unroll n``; ``unroll=True`` prints
    ``#pragma unroll`` (a run-time extent: a serial loop annotated 0, a constant one: a TIR
    unrolled loop); no ``unroll`` prints none. nvcc takes every form."""
    import tilus
    from tilus.backend.build_program import as_program, prepare
    from tilus.backend.codegen import lower_program
    from tilus.backend.cuda_printer import print_cuda

    class Loops(tilus.Script):
        def __call__(self, n: tilus.int32, x: ~tilus.float32):
            self.attrs.blocks = [1]
            self.attrs.warps = 1
            g = self.global_view(x, dtype=tilus.float32, shape=[32])
            acc = self.load_global(g, offsets=[0], shape=[32])
            for _ in self.range(n, unroll=2):
                acc += 1.0
            for _ in self.range(n, unroll=True):
                acc += 2.0
            for _ in self.range(4, unroll=True):
                acc += 3.0
            for _ in self.range(n):
                acc += 4.0
            self.store_global(g, acc, offsets=[0])

    lines = print_cuda(lower_program(prepare(as_program(Loops()), "sm_90")).prim_func).source.splitlines()
    pragmas = [lines[i - 1].strip() if lines[i - 1].strip().startswith("#pragma") else None
               for i, line in enumerate(lines) if line.strip().startswith("for (")]
    assert pragmas == ["#pragma unroll 2", "#pragma unroll", "#pragma unroll", None]
    assert not build(Loops(), arch="sm_90").resources.spills
