"""benchmarks/gpu_queue.py: the job queue that GPU sessions work through, call after call."""

import json
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = os.path.join(ROOT, "benchmarks", "gpu_queue.py")


def _job(name, est, script):
    return {"name": name, "est_s": est, "cmd": ["bash", "-c", script]}


def _run(tmp_path, jobs, *flags):
    jf = tmp_path / "jobs.jsonl"
    jf.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
    p = subprocess.run([sys.executable, QUEUE, str(jf), "--out", str(out), "--state", str(tmp_path / "done"), *flags],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    with tarfile.open(out / "queue.tgz") as tf:
        files = {m.name: tf.extractfile(m).read().decode() for m in tf.getmembers() if m.isfile()}
    return summary, files


def test_queue_spreads_jobs_over_gpus_skips_what_does_not_fit_and_resumes(tmp_path):
    jobs = [_job("a", 1, "echo '{\"gpu\": \"'$CUDA_VISIBLE_DEVICES'\"}'; sleep 1; echo {out} >&2"),
            _job("b", 1, "echo '{\"gpu\": \"'$CUDA_VISIBLE_DEVICES'\"}'; sleep 1"),
            _job("fails", 1, "exit 3"),
            _job("long", 30, "echo late"),
            _job("killed", 2, "sleep 30")]
    summary, files = _run(tmp_path, jobs, "--gpus", "0,1", "--deadline-s", "5", "--hard-stop-s", "4")
    # a and b ran side by side, one per GPU; the job that cannot fit was not started; the sleeper was killed
    assert {json.loads(files["queue/a.jsonl"])["gpu"], json.loads(files["queue/b.jsonl"])["gpu"]} == {"0", "1"}
    assert files["queue/a.err"].strip().endswith("queue/a")  # {out}: the job's own folder
    assert "hard stop: killing killed" in files["queue/queue.log"]
    assert summary["left"] == ["long", "killed"]  # a failure is done (not retried); killed and unstarted are left
    assert set((tmp_path / "done").read_text().split()) == {"a", "b", "fails"}
    # the next call goes on with what is left, and only that
    jobs[3]["est_s"], jobs[4]["cmd"] = 1, ["bash", "-c", "echo again"]
    summary, files = _run(tmp_path, jobs, "--gpus", "0", "--deadline-s", "20", "--hard-stop-s", "30")
    assert summary["left"] == []
    assert sorted(n for n in files if n.endswith(".jsonl")) == ["queue/killed.jsonl", "queue/long.jsonl"]


def test_a_worker_can_hold_several_gpus(tmp_path):
    jobs = [_job(n, 1, "echo '{\"gpus\": \"'$CUDA_VISIBLE_DEVICES'\"}'") for n in ("a", "b")]
    summary, files = _run(tmp_path, jobs, "--gpus", "0+1,2+3+4", "--deadline-s", "20", "--hard-stop-s", "30")
    assert summary["left"] == []
    assert {json.loads(files[f"queue/{n}.jsonl"])["gpus"] for n in ("a", "b")} <= {"0,1", "2,3,4"}
    assert "gpu 0+1 start" in files["queue/queue.log"] or "gpu 2+3+4 start" in files["queue/queue.log"]


def test_queue_rejects_a_job_without_its_fields(tmp_path):
    jf = tmp_path / "jobs.jsonl"
    jf.write_text(json.dumps({"name": "x", "cmd": ["true"]}) + "\n")
    p = subprocess.run([sys.executable, QUEUE, str(jf), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert p.returncode != 0 and "lacks 'est_s'" in p.stderr and "Traceback" not in p.stderr
