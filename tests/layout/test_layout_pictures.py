from tilus.ir.layout import local, replicate, spatial

C = local(2, 1) * spatial(8, 4) * local(1, 2)


def cells(text):
    """The table's cells as a list of rows (header lines and row labels dropped)."""
    return [line.split()[1:] for line in text.splitlines()[2:]]


def test_visualize_c_fragment():
    text = C.visualize()
    assert text.splitlines()[0].startswith("local(2,1)*spatial(8,4)*local(1,2): shape [16, 8], 32 threads")
    grid = cells(text)
    assert len(grid) == 16 and all(len(row) == 8 for row in grid)
    assert grid[0][0] == "0:0" and grid[0][1] == "0:1" and grid[0][2] == "1:0"
    assert grid[1][0] == "4:0" and grid[7][7] == "31:1"
    assert grid[8][0] == "0:2" and grid[9][3] == "5:3" and grid[15][7] == "31:3"


def test_visualize_replication():
    grid = cells((spatial(4, 1) * replicate(8)).visualize())
    assert grid[0] == ["0/1/../7:0"] and grid[3] == ["24/25/../31:0"]
    assert cells((spatial(2, 1) * replicate(2)).visualize()) == [["0/1:0"], ["2/3:0"]]


def test_png_and_svg(tmp_path):
    png, svg = tmp_path / "c.png", tmp_path / "c.svg"
    C.to_png(str(png))
    C.to_svg(str(svg))
    data = png.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()
