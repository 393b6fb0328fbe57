"""Every benchmark JSON records where it ran: date, git commit and tool versions (issue 19)."""
import datetime

from benchmarks.provenance import provenance


def test_provenance_names_the_commit_and_the_tools():
    p = provenance()
    assert p["date"] == datetime.date.today().isoformat()
    assert len(p["git_commit"]) == 40 and int(p["git_commit"], 16) >= 0
    assert p["versions"]["torch"] and p["versions"]["tvm_ffi"]


def test_provenance_without_git_takes_the_bundles_commit(monkeypatch):
    """On a GPU machine the bundle's copy of the sources has no .git (and maybe no git):
    gpu_session.sh passes the commit the bundle was built from."""
    import subprocess

    from benchmarks import provenance as prov

    def no_git(cmd, *args, **kwargs):
        if cmd[0] == "git":
            raise FileNotFoundError("git")
        return subprocess.run(cmd, *args, **kwargs)

    monkeypatch.setattr(prov.subprocess, "run", no_git)
    monkeypatch.setenv("TILUS_GIT_COMMIT", "abc123+dirty")
    assert prov.provenance()["git_commit"] == "abc123+dirty"
    monkeypatch.delenv("TILUS_GIT_COMMIT")
    assert prov.provenance()["git_commit"] == "unknown"
