"""The thread policy: cgroup quota, override, load, and what it sets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from moodshift import threads
from moodshift.errors import InputError


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_quota(tmp_path) == pytest.approx(3.0)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads.cgroup_cpu_quota(tmp_path) is None
    assert threads.cgroup_cpu_quota(tmp_path / "missing") is None


def test_quota_caps_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)
    assert threads.available_cores() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.available_cores() == len(os.sched_getaffinity(0))


def test_override_from_env_and_argument(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.decide_threads(role="train").threads == 3
    assert threads.decide_threads(role="serve").reason == "override"
    assert threads.decide_threads(role="train", threads=2).threads == 2  # argument wins
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(InputError, match=threads.ENV):
            threads.decide_threads()
    with pytest.raises(InputError, match="--threads"):
        threads.decide_threads(threads=0)
    with pytest.raises(InputError, match="role"):
        threads.decide_threads(role="gpu")


def test_load_leaves_the_busy_cores_alone(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda own=0.0: 3.0)
    policy = threads.decide_threads(role="train")
    assert (policy.threads, policy.reason) == (5, "load")
    monkeypatch.setattr(threads, "busy_cores", lambda own=0.0: 20.0)
    assert threads.decide_threads(role="mine").threads == 1
    monkeypatch.setattr(threads, "busy_cores", lambda own=0.0: 0.0)
    assert threads.decide_threads(role="mine").reason == "cores"
    assert threads.decide_threads(role="serve").threads == 1


def test_busy_cores_counts_processes_that_spin():
    from moodshift.bench.core import busy_processes

    with busy_processes(2):
        time.sleep(0.3)  # the spinners are runnable from their first instruction on
        busy = threads.busy_cores(samples=5, interval=0.01)
    tasks = int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    # Two spinning processes are always runnable; nothing can exceed the tasks there are.
    assert 2.0 <= busy <= tasks


def test_apply_sets_torch_and_refresh_follows_the_load(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda own=0.0: 0.0)
    try:
        policy = threads.apply_thread_policy(role="train")
        assert policy.threads == 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(threads, "busy_cores", lambda own=0.0: 2.0)
        assert policy.refresh() is True
        assert policy.threads == 1 and torch.get_num_threads() == 1
        assert policy.refresh() is False
    finally:
        torch.set_num_threads(before)


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with threads.torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_limited_threads_sets_every_library_and_restores():
    import faiss
    from threadpoolctl import threadpool_info

    # Nested, so the outer count (2) differs from the inner one whatever the environment set.
    with threads.limited_threads(2):
        blas_outer = [p["num_threads"] for p in threadpool_info()]
        with threads.limited_threads(1):
            assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
            assert all(p["num_threads"] == 1 for p in threadpool_info())
        assert torch.get_num_threads() == 2 and faiss.omp_get_max_threads() == 2
        assert [p["num_threads"] for p in threadpool_info()] == blas_outer
