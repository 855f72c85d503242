"""Each process reports its own resident memory and open file descriptors; the driver names them per process."""

import psutil

from longrl.logging.process import process_metrics, process_stats


def test_a_process_measures_its_own_rss_and_counts_a_file_it_opens(tmp_path):
    before = process_stats()
    now = psutil.Process().memory_info().rss  # the interpreter may allocate in between
    assert before["rss_bytes"] > 10 * 2 ** 20 and abs(now - before["rss_bytes"]) < 64 * 2 ** 20
    with (tmp_path / "f").open("w"):
        assert process_stats()["open_fds"] == before["open_fds"] + 1
    assert process_stats()["open_fds"] == before["open_fds"]


def test_metrics_name_the_driver_and_each_rank_in_mb():
    mib = 2 ** 20
    metrics = process_metrics({"rss_bytes": 100 * mib, "open_fds": 30.0},
                              [{"rss_bytes": 2000 * mib, "open_fds": 110.0}, {"rss_bytes": 1900 * mib, "open_fds": 100.0}])
    assert metrics == {"perf/rss_mb_driver": 100.0, "perf/open_fds_driver": 30.0, "perf/rss_mb_rank0": 2000.0,
                       "perf/open_fds_rank0": 110.0, "perf/rss_mb_rank1": 1900.0, "perf/open_fds_rank1": 100.0}
