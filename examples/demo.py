"""Tilus demo: the main job of `make demo`. It grows with the project."""
import numpy as np

import tilus
from tilus import dtypes


def show_types() -> None:
    lowbit = dtypes.lowbit_types()
    print(f"Tilus {tilus.__version__}: {len(dtypes.all_types())} data types, "
          f"{len(lowbit)} of them 1 to 8 bits wide")
    for k in range(1, 9):
        names = [t.name for t in lowbit if t.nbits == k]
        print(f"  {k} bits: {', '.join(names)}")
    print()


def show_value_tables() -> None:
    print("Value tables (code in binary: value)")
    for name in ("uint3", "int4", "float3_e1m1", "float4_e2m1", "float6_e3m2"):
        print(dtypes.get(name).format_value_table())
        print()


def show_packing() -> None:
    t = dtypes.float4_e2m1
    values = np.array([[0.3, -1.2, 2.6, 100.0, -0.0], [0.75, 5.0, -6.0, 1.0, 0.25]], np.float32)
    codes = t.encode(values)                    # round to nearest even, saturate at +-6
    packed = dtypes.pack(codes, t)              # 10 elements * 4 bits = 5 bytes
    words = dtypes.pack_words(codes, t)
    back = t.decode(dtypes.unpack(packed, t, shape=values.shape))
    print(f"Packing a {values.shape[0]}x{values.shape[1]} tensor as {t.name} "
          f"(element i at bits [4i, 4i+4), little-endian)")
    def show(rows) -> str:
        return " | ".join(" ".join(f"{v:>5g}" for v in row) for row in rows.tolist())

    print(f"  values   {show(values)}")
    print(f"  codes    {' | '.join(' '.join(f'{c:>5x}' for c in row) for row in codes.tolist())}  (hex)")
    print(f"  bytes    {' '.join(f'{b:02x}' for b in packed.tolist())}  ({packed.size} bytes)")
    print(f"  words    {' '.join(f'0x{w:08x}' for w in words.tolist())}  (32-bit, zero padded)")
    print(f"  unpacked {show(back)}")

    t3 = dtypes.uint3
    codes3 = np.array([1, 2, 3, 4, 5, 6, 7, 0], np.uint8)
    packed3 = dtypes.pack(codes3, t3)
    print(f"  uint3 {codes3.tolist()} -> bytes {' '.join(f'{b:02x}' for b in packed3.tolist())} "
          f"-> {dtypes.unpack(packed3, t3, 8).tolist()}")


def show_lowbit_matmul() -> None:
    """The main job: one low-bit matmul kernel in the DSL, its IR, and runs for several types."""
    import matmul_lowbit

    kernel = matmul_lowbit.MatmulLowBit("uint3", group_size=32)
    text = str(kernel.program())
    print("A low-bit matmul kernel written once in the DSL (examples/matmul_lowbit.py); "
          "its IR for uint3 weights:")
    print("\n".join("  " + line for line in text.splitlines()))
    engine = "the CPU interpreter"
    print(f"\nRunning C = A @ dequant(W) on {engine}, checked against torch:")
    for wtype in matmul_lowbit.WEIGHT_TYPES:
        err = matmul_lowbit.run(wtype)
        print(f"  {wtype:12s} A[20, 80] fp16 @ W[80, 40] (group 32): max |C - torch| = {err:.3g}")


def show_compiled_lowbit_matmul() -> None:
    """The same kernel compiled for an H100 (sm_90) on this machine, and its CUDA simulated here."""
    import torch

    import matmul_lowbit

    kernel = matmul_lowbit.MatmulLowBit("uint3", group_size=32)
    compiled = tilus.build(kernel, arch="sm_90")
    lines = compiled.cuda_source.splitlines()
    start = next(i for i, line in enumerate(lines) if "__global__" in line)
    print(f"\nCompiled for sm_90 without a GPU (tilus.build): {len(lines)} lines of CUDA; the start:")
    print("\n".join("  " + line for line in lines[start:start + 12]))
    r = compiled.resources
    sass = compiled.sass
    counts = ", ".join(f"{op} x{sass.count(op)}" for op in ("HMMA", "LDSM", "LOP3", "PRMT") if op in sass)
    print(f"  {r.registers} registers, {r.spill_store_bytes} spill bytes, "
          f"{compiled.launch['shared_bytes']} bytes of shared memory; SASS: {counts}")
    if torch.cuda.is_available():
        engine, device = "the GPU", "cuda"
    else:
        engine, device = "the CPU simulator of the compiled kernel (tilus.simulate)", "cpu"
    a, w, scales, ref = matmul_lowbit.make_inputs("uint3", 20, 40, 80, 32)
    c = torch.empty(20, 40, dtype=torch.float16)
    args = [t.to(device) for t in (a, w, scales, c)]
    if device == "cuda":
        kernel(20, 40, 80, *args)
        c = args[-1].cpu()
    else:
        tilus.simulate(compiled, 20, 40, 80, a, w, scales, c)
    print(f"  ran on {engine}: max |C - torch| = {(c.float() - ref).abs().max().item():.3g}")


def show_quantized_model() -> None:
    """The end use: a small Llama-style decoder with its linear layers quantized by tilus.nn."""
    import llm_decode

    print("\nA tiny Llama-style decoder quantized with tilus.nn.quantize_model, against its float self:")
    llm_decode.run(types=("uint4", "float4_e2m1"), steps=6)


def main() -> None:
    show_types()
    show_value_tables()
    show_packing()
    print()
    show_lowbit_matmul()
    show_compiled_lowbit_matmul()
    show_quantized_model()


if __name__ == "__main__":
    main()
