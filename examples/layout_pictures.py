"""Print the mma.m16n8k16 C fragment as a table and draw it to a PNG.

Usage: python examples/layout_pictures.py [output.png]   (default: a file in a temporary directory)
"""
import os
import sys
import tempfile

from tilus.ir.layout import local, spatial


def main() -> None:
    layout = local(2, 1) * spatial(8, 4) * local(1, 2)   # the mma.m16n8k16 C fragment
    print(layout.visualize())
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "mma_c.png")
    layout.to_png(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
