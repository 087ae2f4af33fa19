"""CPU counting honours a cgroup CPU limit (cgroup v2 and v1 files, written for real under tmp_path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cpus import cgroup_cpu_quota, usable_cpus
from service.settings import load_settings


def test_cgroup_v2_quota_and_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == min(2, len(os.sched_getaffinity(0)))  # 1.5 CPUs -> 2 processes
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.0 and usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None and usable_cpus(tmp_path) >= 1


@pytest.mark.parametrize(("given", "stored"), [("auto", 0), ("AUTO", 0), ("3", 3)])
def test_api_servers_take_a_count_or_auto(given: str, stored: int) -> None:
    assert load_settings(["--api-servers", given], {}).api_servers == stored
    assert load_settings([], {"MNIST_API_SERVERS": given}).api_servers == stored
