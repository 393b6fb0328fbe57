import pytest

from tilus.backend import toolchain


def _need(tool):
    if toolchain.find_tool(tool) is None:
        pytest.skip(f"{tool} not installed")


@pytest.fixture(scope="session")
def need_nvcc():
    if not toolchain.have_compiler():
        pytest.skip("neither nvcc nor NVRTC installed")


@pytest.fixture(scope="session")
def need_disassembler():
    if toolchain.find_tool("cuobjdump") is None and toolchain.find_tool("nvdisasm") is None:
        pytest.skip("neither cuobjdump nor nvdisasm installed")


@pytest.fixture(scope="session")
def fixture_kernels(need_nvcc):
    """Each hand-written tirx kernel built once per arch: {(name, arch): CompiledKernel}."""
    from tilus.backend import build, testing

    out = {}
    for name, factory in (("vector_add", testing.vector_add_f32x4), ("mma", testing.mma_m16n8k16_f16),
                          ("lop3_prmt", testing.lop3_prmt_probe)):
        func = factory()
        for arch in ("sm_80", "sm_90"):
            out[(name, arch)] = build.build_tir(func, arch)
    return out
