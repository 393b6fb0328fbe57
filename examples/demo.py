"""Tilus demo: the main job of `make demo`. It grows with the project."""
import tilus


def main() -> None:
    print(f"Tilus {tilus.__version__}: {len(tilus.dtypes.all_types())} data types")
    for t in tilus.dtypes.lowbit_types():
        print(f"  {t.name:14s} {t.nbits} bits")


if __name__ == "__main__":
    main()
