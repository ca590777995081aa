"""minedraft-plan on a Ray cluster: a local Ray instance started (and stopped) by the test, the plan run against it.

Needs the ``ray`` extra (skipped without it); about 10 s on two cores, so it is not marked slow. Run it alone
with ``python -m pytest tests/test_plan_ray.py``.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ray = pytest.importorskip("ray")

ARGS = ["--gpu", "h200", "--target", "qwen3-32b", "--draft", "qwen3-0.6b", "-tp", "1", "-k", "3,5",
        "--max-num-seqs", "16,32", "--psd-capacity", "double", "--sd-drafter", "shared", "--survivors", "1",
        "--accept-sweep", "0.8", "--num-prompts", "100", "--output-len", "128", "--request-rate", "6",
        "--slo-tpot-ms", "40"]


def test_plan_on_a_local_ray_cluster(tmp_path):
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp = tempfile.mkdtemp(prefix="mdray")  # short: Ray's socket paths must fit in 107 bytes
    info = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024,
                    logging_level="ERROR", log_to_driver=False, _temp_dir=temp)
    try:
        address = info.address_info["gcs_address"]
        on_ray = subprocess.run([sys.executable, "-m", "minedraft.cli.plan", *ARGS, "--ray-address", address,
                                 "--out", str(tmp_path / "ray-plan"), "--json", str(tmp_path / "ray.json")],
                                capture_output=True, text=True, timeout=600)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "Ray cluster at" in on_ray.stderr
    res = json.loads((tmp_path / "ray.json").read_text())
    assert res["run"]["pool"].startswith(f"Ray cluster at {address}")
    # every point ran in a Ray worker process, not in the planner's own process
    workers = set()
    for line in (tmp_path / "ray-plan" / "points.jsonl").read_text().splitlines():
        workers.add(json.loads(line)["result"]["worker"])
    assert workers and all(not w.endswith(f":{os.getpid()}") for w in workers)
    # and the plan is the one the local processes give
    local = subprocess.run([sys.executable, "-m", "minedraft.cli.plan", *ARGS, "--workers", "2",
                            "--out", str(tmp_path / "local-plan"), "--json", str(tmp_path / "local.json")],
                           capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr
    loc = json.loads((tmp_path / "local.json").read_text())
    assert res["best"] == loc["best"] and res["recommendation"] == loc["recommendation"]
    assert res["counts"]["points"] == loc["counts"]["points"]
