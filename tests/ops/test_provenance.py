"""Every benchmark JSON records where it ran: date, git commit and tool versions (issue 19)."""
import datetime

from benchmarks.provenance import provenance


def test_provenance_names_the_commit_and_the_tools():
    p = provenance()
    assert p["date"] == datetime.date.today().isoformat()
    assert len(p["git_commit"]) == 40 and int(p["git_commit"], 16) >= 0
    assert p["versions"]["torch"] and p["versions"]["tvm_ffi"]
