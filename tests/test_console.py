"""The console: progress bars on a terminal (one row per running batch, several runs at once),
lines elsewhere, --quiet, and the campaign folder's log file."""

from __future__ import annotations

import io
import re
import shutil
import threading

from alprobe.cli import main
from alprobe.console import Console
from alprobe.executor import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_of_several_runs_get_rows_of_their_own_and_messages_reach_the_log(tmp_path):
    term = _Terminal()
    con = Console(tmp_path / "alprobe.log", stream=term)
    runs = [con.tagged(f"arm{k}") for k in range(3)]
    started, go = threading.Barrier(3), threading.Event()
    rows = []

    def work(log) -> None:
        bar = Progress(log, "gen 1 label", 4)
        rows.append(bar.bar.row)
        started.wait()
        go.wait()
        for _ in range(4):
            bar.step()
        log("done here")

    threads = [threading.Thread(target=work, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    while len(rows) < 3:
        pass
    assert sorted(rows) == [0, 1, 2]  # stacked, not drawn over each other
    go.set()
    for t in threads:
        t.join()
    con.close()
    out = term.getvalue()
    for k in range(3):
        assert f"[arm{k}] gen 1 label" in out and f"[arm{k}] done here" in out
    log = (tmp_path / "alprobe.log").read_text().splitlines()
    # each finished batch leaves one line in the log, time-stamped; no bar drawing in it
    assert sum("gen 1 label: 4/4" in line for line in log) == 3
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in log)
    assert not any("|" in line for line in log)


def test_lines_without_a_terminal_and_nothing_when_quiet(tmp_path):
    plain = io.StringIO()
    con = Console(tmp_path / "a.log", stream=plain)
    bar = Progress(con, "gen 2 train", 2)
    assert bar.bar is None
    bar.step()
    bar.step()
    assert "gen 2 train: 0/2" in plain.getvalue() and "gen 2 train: 2/2" in plain.getvalue()
    quiet_out = _Terminal()
    q = Console(tmp_path / "b.log", quiet=True, stream=quiet_out)
    p = Progress(q, "gen 3 label", 1)
    p.step()
    q("a message")
    q.close()
    assert quiet_out.getvalue() == ""
    assert "a message" in (tmp_path / "b.log").read_text()


def test_campaign_folder_log_and_quiet_resume(tiny_finished, tmp_path, capsys):
    d, _, lines = tiny_finished
    log = (d / "alprobe.log").read_text()
    assert "generation 1" in log and "campaign tiny finished" in log
    # every message the run printed (but the cluster's address, said before the folder opens)
    assert all(line in log for line in lines if not line.startswith("dask:"))
    copy = tmp_path / "tiny"
    shutil.copytree(d, copy)
    # (other tests may have rerun the shared folder: count from what the copy holds)
    before = (copy / "alprobe.log").read_text().count("campaign tiny finished")
    assert main(["resume", str(copy), "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "meV/A" in out[0] and "alprobe.log" in out[0]
    # the resume appended to the folder's log (the run's lines are kept)
    assert (copy / "alprobe.log").read_text().count("campaign tiny finished") == before + 1
