"""tilus.progress: plain lines (counts, ETA, at most one per interval) when not on a terminal, a
tqdm bar on one, nothing when disabled; the autotuner's builds report through it."""
import io
import re

from tilus.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_count_outcomes_and_give_an_eta():
    out = io.StringIO()
    with Progress(4, "building K", counts={"pruned": 2}, stream=out, interval=0.0) as p:
        p.update("built")
        p.update("failed")
        p.update("built", 2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert re.fullmatch(r"building K: 1/4 \(pruned 2, built 1\), \d+:\d\d elapsed, ETA \d+:\d\d",
                        lines[0])
    assert lines[-1].startswith("building K: 4/4 (pruned 2, built 3, failed 1)")
    assert "ETA" not in lines[-1]
    assert p.counts == {"pruned": 2, "built": 3, "failed": 1}


def test_plain_lines_are_throttled_but_the_last_is_always_written():
    out = io.StringIO()
    p = Progress(50, "x", stream=out, interval=3600.0)
    for _ in range(50):
        p.update("built")
    assert out.getvalue().splitlines() == [p.line()] and "50/50" in p.line()


def test_a_terminal_gets_a_tqdm_bar_and_disabled_prints_nothing():
    term = Terminal()
    with Progress(3, "bar", stream=term) as p:
        assert p._bar is not None
        p.update("built", 3)
        p.write("a message")
    text = term.getvalue()
    assert "bar" in text and "3/3" in text and "built=3" in text and "a message" in text
    quiet = io.StringIO()
    with Progress(3, "q", stream=quiet, enabled=False) as p:
        p.update("built", 3)
    assert quiet.getvalue() == "" and p.counts == {"built": 3}


def test_autotune_builds_report_progress(capsys):
    from tests.ops.test_autotune import ToyAdd
    from tilus.autotune import build_parallel

    results = build_parallel(ToyAdd, {}, [{"block": 64, "warps": 2}, {"block": 64, "warps": 99}],
                             lambda k: str(k.program()), jobs=1, pruned=1)
    assert [r.ok for r in results] == [True, False]
    err = capsys.readouterr().err
    assert "building ToyAdd: 2/2 (built 1, failed 1, pruned 1)" in err
