"""A study's runs as SLURM jobs through submitit (issue 34).

The jobs here are real: submitit's local executor pickles each run, starts it as a process of its
own with submitit's job folder, signals and requeue, exactly as ``sbatch`` would start it on a
cluster. What needs a SLURM controller (``sbatch`` itself) is replaced by a fake ``sbatch`` that
keeps the script submitit wrote, which the test reads.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness_fixtures import tiny_config

from samkit import cli
from samkit.study import compare
from samkit.study.launch import SlurmLauncher, SlurmOptions

pytest.importorskip("submitit")

TIMES = {"train_time", "wall_time", "load_max"}  # what differs between two runs of one study
METHODS = ["sgd", "sam"]
STUDY = dict(methods=METHODS, seeds=[0], flatness=True, flatness_examples=64, quiet=True)


def local_executor(**options) -> SlurmLauncher:
    return SlurmLauncher(SlurmOptions(executor="local", poll_s=0.1, **options))


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv") as f:
        return [{k: v for k, v in r.items() if k not in TIMES} for r in csv.DictReader(f)]


def listing(folder: Path) -> set[str]:
    """Every file of a study folder but submitit's, and the figures' names (not their bytes)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if ".submitit" not in p.parts and "tensorboard" not in p.parts}  # fmt: skip


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """One study run locally and the same study submitted through submitit's local executor."""
    base = tmp_path_factory.mktemp("slurm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAMKIT_CACHE", str(tmp_path_factory.getbasetemp() / "samkit-cache"))
        cfg = tiny_config(threads=1)
        compare(cfg, out=base / "local", **STUDY)
        launcher = local_executor()
        compare(cfg, out=base / "submitit", launcher=launcher, **STUDY)
        yield base / "local", base / "submitit", launcher


def test_a_study_through_submitit_has_the_local_study_s_folders_and_results(studies):
    local, submitted, launcher = studies
    assert [run.name for run, _ in launcher.submitted] == ["sgd-seed0", "sam-seed0"]
    for _, job in launcher.submitted:  # each run was a job of its own: submitit's result pickle
        assert job.state == "FINISHED" and job.result()["status"] == "complete"
        assert Path(job.paths.result_pickle).is_file()
    assert rows(submitted) == rows(local)  # every column but the times, flatness included
    assert rows(local)[0]["lambda_max"] and rows(local)[0]["test_loss"] != rows(local)[1]["test_loss"]
    assert listing(submitted) == listing(local)
    study = json.loads((submitted / "study.json").read_text())
    assert study["runs"] == json.loads((local / "study.json").read_text())["runs"]
    session = study["sessions"][-1]
    assert session["launcher"] == "slurm" and session["executor"] == "local"
    assert [s["dir"] for s in session["submitted"]] == ["sgd-seed0", "sam-seed0"]
    for run in ("sgd-seed0", "sam-seed0"):
        env = json.loads((submitted / run / "env.json").read_text())
        assert "resumes" not in env and env["command"][-1] == str(launcher.folder(submitted))


def test_a_second_submission_finds_every_run_done(studies, capsys):
    _, submitted, _ = studies
    before = sorted((submitted / ".submitit").iterdir())
    results = (submitted / "results.csv").read_text()
    again = local_executor()
    compare(tiny_config(threads=1), out=submitted, launcher=again, **{**STUDY, "quiet": False})
    assert again.submitted == []
    assert "all 2 runs are finished: nothing to submit" in capsys.readouterr().out
    assert sorted((submitted / ".submitit").iterdir()) == before  # no job, no pickle
    assert rows(submitted) == [
        {k: v for k, v in r.items() if k not in TIMES} for r in csv.DictReader(results.splitlines())
    ]
    assert json.loads((submitted / "study.json").read_text())["sessions"][-1]["submitted"] == []
    assert cli.main(["status", str(submitted)]) == 0
    assert "2/2 runs finished" in capsys.readouterr().out


@pytest.mark.slow
def test_a_preempted_job_saves_a_checkpoint_is_requeued_and_resumes(harness, tmp_path):
    """submitit's preemption signal (SIGUSR2) mid-run: samkit ends the step and checkpoints,
    submitit requeues the job, the requeued job resumes the run to the uninterrupted results."""
    cfg = tiny_config(threads=1, epochs=40)
    compare(cfg, methods=["sgd"], seeds=[0], out=tmp_path / "local", flatness=False, quiet=True)
    launcher = local_executor(wait=False)
    out = tmp_path / "submitit"
    result = compare(cfg, methods=["sgd"], seeds=[0], out=out, flatness=False, quiet=True,
                     launcher=launcher)  # fmt: skip
    assert "0/1 runs finished" in result.table and "samkit report" in result.table
    run, job = launcher.submitted[0]
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():  # the job is training, past its first epoch
        assert job.state == "RUNNING" and time.monotonic() < deadline, job.stderr()
        time.sleep(0.01)
    pid = json.loads((run / ".samkit-lock").read_text())["pid"]  # the job's process holds the run
    os.kill(pid, signal.SIGUSR2)
    job.wait()
    assert job.state == "FINISHED" and job.result()["status"] == "complete", job.stderr()
    assert "interrupted by SIGUSR2 at epoch" in job.stderr() and "checkpoint saved" in job.stderr()
    assert "Requeued job" in job.stdout()
    env = json.loads((run / "env.json").read_text())
    assert len(env["resumes"]) == 1  # one requeue, resumed from the checkpoint
    assert cli.main(["report", str(out)]) == 0
    assert rows(out) == rows(tmp_path / "local")
    local_metrics = (tmp_path / "local" / "sgd-seed0" / "metrics.jsonl").read_text().splitlines()
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 40
    def strip(lines: list[str]) -> list[dict]:  # the machine's: times and load
        return [{k: v for k, v in json.loads(m).items() if "time" not in k and k != "load"} for m in lines]

    assert strip(metrics) == strip(local_metrics)


@pytest.mark.slow
def test_a_study_started_as_jobs_and_finished_locally_equals_the_local_study(harness, tmp_path):
    """A job killed outright (SIGKILL: no checkpoint, no requeue) mid-run; the same study then run
    with the local launcher resumes that run from its last checkpoint and reuses the other."""
    cfg = tiny_config(threads=1)
    methods = ["sgd:epochs=40", "sam"]
    compare(cfg, methods=methods, seeds=[0], out=tmp_path / "local", flatness=False, quiet=True)
    launcher = local_executor(wait=False)
    out = tmp_path / "mixed"
    compare(cfg, methods=methods, seeds=[0], out=out, flatness=False, quiet=True, launcher=launcher)
    (run, job), (_, other) = launcher.submitted
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists():
        assert job.state == "RUNNING" and time.monotonic() < deadline, job.stderr()
        time.sleep(0.01)
    os.kill(json.loads((run / ".samkit-lock").read_text())["pid"], signal.SIGKILL)
    job.wait()
    other.wait()
    assert not (run / "summary.json").exists() and (out / "sam-seed0" / "summary.json").exists()
    compare(cfg, methods=methods, seeds=[0], out=out, flatness=False, quiet=True)  # local
    assert rows(out) == rows(tmp_path / "local")
    assert len(json.loads((run / "env.json").read_text())["resumes"]) == 1
    assert "resumes" not in json.loads((out / "sam-seed0" / "env.json").read_text())
    sessions = json.loads((out / "study.json").read_text())["sessions"]
    assert [s["launcher"] for s in sessions] == ["slurm", "local"]


@pytest.mark.slow
def test_two_submissions_that_race_train_each_run_once(harness, tmp_path):
    """Two ``samkit compare --launcher slurm`` on one folder at once: both submit every run; the
    run folders' locks make the later job wait, then reuse the run."""
    out = tmp_path / "study"
    args = [sys.executable, "-m", "samkit", "compare", "--dataset", "mnist1d", "--model", "mlp",
            "--epochs", "30", "--batch-size", "32", "--max-steps-per-epoch", "4", "--train-subset",
            "256", "--test-subset", "128", "--threads", "1", "--methods", "sgd", "sam", "--seeds",
            "0", "--no-flatness", "--quiet", "--out", str(out), "--launcher", "slurm",
            "--slurm-executor", "local"]  # fmt: skip
    env = {**os.environ, "SAMKIT_CACHE": str(harness)}
    procs = [subprocess.Popen(args, env=env, text=True, stderr=subprocess.PIPE) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for run in ("sgd-seed0", "sam-seed0"):
        assert "resumes" not in json.loads((out / run / "env.json").read_text())  # trained once
        assert len((out / run / "metrics.jsonl").read_text().splitlines()) == 30
    logs = "".join(p.read_text() for p in (out / ".submitit").glob("*_log.err"))
    assert "samkit: waiting for" in logs  # a job of the second submission met the first's run
    assert len(json.loads((out / "study.json").read_text())["sessions"]) == 2


# ---- what only a cluster runs: the sbatch script, read from a fake sbatch ----------------------
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that keeps the script it is given and answers a job id; ``srun`` that exists."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def test_the_sbatch_script_asks_for_what_the_options_say(harness, tmp_path, fake_slurm, capsys):
    out = tmp_path / "study"
    options = SlurmOptions.read(
        None, partition="gpu", time="1-02:03:04", gpus=2, cpus=8, mem="32G", account="lab",
        sbatch={"constraint": "a100", "qos": "high", "exclusive": None},
        setup=["module load cuda/12.4"], array_parallelism=3, wait=False,
    )  # fmt: skip
    launcher = SlurmLauncher(options)
    compare(tiny_config(), methods=["sgd", "sam"], seeds=[0, 1], out=out, flatness=False,
            quiet=True, launcher=launcher)  # fmt: skip
    script = fake_slurm.read_text()
    lines = script.splitlines()
    for line in [
        "#SBATCH --partition=gpu", "#SBATCH --time=1564", "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --account=lab",
        "#SBATCH --constraint=a100", "#SBATCH --qos=high", "#SBATCH --exclusive",
        "#SBATCH --array=0-3%3", "#SBATCH --signal=USR2@120", "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1", "#SBATCH --job-name=samkit-study", "module load cuda/12.4",
    ]:  # fmt: skip
        assert line in lines, script
    folder = out / ".submitit"
    assert f"#SBATCH --output={folder}/%A_%a_0_log.out" in lines
    assert lines.index("module load cuda/12.4") < next(i for i, x in enumerate(lines) if "srun" in x)
    assert f"{sys.executable} -u -m submitit.core._submit {folder}" in script
    # each array task's pickle runs one run of the plan, as a local study would
    assert [d for _, d in sorted((j.job_id, r.name) for r, j in launcher.submitted)] == [
        "sgd-seed0", "sgd-seed1", "sam-seed0", "sam-seed1"]  # fmt: skip
    for task, name in enumerate(["sgd-seed0", "sgd-seed1", "sam-seed0", "sam-seed1"]):
        with open(folder / f"4242_{task}_submitted.pkl", "rb") as f:
            delayed = pickle.load(f)
        cfg, run, flatness = delayed.args
        assert type(delayed.function).__name__ == "RunJob" and run == str(out / name)
        assert (cfg["optimizer"], cfg["seed"], flatness) == (name.split("-")[0], int(name[-1]), None)
    assert not any((out / name).exists() for name in ("sgd-seed0", "sam-seed1"))  # nothing ran here
    capsys.readouterr()
    assert cli.main(["status", str(out)]) == 1
    status = capsys.readouterr().out
    assert "0/4 runs finished, 4 waiting" in status and "4242_0, 4242_1, 4242_2, 4242_3" in status


# ---- bad options: one error line, exit 2, nothing written ----------------------------------------
SMALL = ["--dataset", "mnist1d", "--model", "mlp", "--epochs", "1", "--seeds", "0", "--quiet"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-time", "0"], "--slurm-time"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-time", "2h"], "--slurm-time"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-mem", "lots"], "--slurm-mem"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-gpus", "-1"], "--slurm-gpus"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-sbatch", "array=0-3"],
         "--slurm-sbatch array"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-sbatch", "time=5"],
         "use --slurm-time"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-time", "5",
          "--slurm-max-requeues", "-1"], "--slurm-max-requeues"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--slurm-time", "1"],
         "--slurm-signal-delay-s"),
        (["--launcher", "slurm", "--slurm-executor", "local", "--jobs", "2"], "--jobs 2"),
        (["--launcher", "slurm"], "sbatch"),  # no SLURM on this machine
        (["--slurm-partition", "gpu"], "--slurm-partition is an option of --launcher slurm"),
        (["--no-wait"], "--no-wait is an option of --launcher slurm"),
        (["--launcher", "slurm", "--slurm-config", "missing.yaml"], "does not exist"),
        (["--launcher", "slurm", "--slurm-config", "{bad}"], "unknown key(s) gpu"),
    ],
)  # fmt: skip
def test_a_bad_launcher_option_is_one_error_line_and_writes_nothing(
    tmp_path, capsys, monkeypatch, args, message
):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here, even on a cluster's login node
    bad = tmp_path / "bad.yaml"
    bad.write_text("slurm:\n  gpu: 1\n")
    args = [str(bad) if a == "{bad}" else a for a in args]
    out = tmp_path / "study"
    code = cli.main(["compare", *SMALL, *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_without_submitit_the_slurm_launcher_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    out = tmp_path / "study"
    code = cli.main(["sweep", *SMALL, "--launcher", "slurm", "--slurm-executor", "local", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "pip install 'samkit[cluster]'" in err, err
    assert not out.exists()


def test_reproduce_refuses_not_waiting(tmp_path):
    from samkit.errors import SamkitError
    from samkit.study.reproduce import reproduce

    with pytest.raises(SamkitError, match="waits for each study"):
        reproduce(tmp_path / "suite", launcher=local_executor(wait=False))
    assert not (tmp_path / "suite").exists()


def test_submitit_is_imported_by_the_slurm_launcher_only():
    """Importing samkit, its CLI and its studies (a local study's whole path) never imports
    submitit; in the source, only the launcher's two modules import it, inside functions."""
    code = ("import sys, samkit, samkit.cli, samkit.study, samkit.study.launch, samkit.study.status;"
            "samkit.cli.build_parser(); print('submitit' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    root = Path(__file__).resolve().parents[2] / "samkit"
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                       if "import submitit" in p.read_text())  # fmt: skip
    assert importers == ["study/launch/job.py", "study/launch/slurm.py"]
    for path in importers:
        for line in (root / path).read_text().splitlines():
            if line.strip().startswith("import submitit"):
                assert line.startswith("        "), f"{path}: {line!r} is not inside a function"


def test_compare_no_wait_from_the_command_line_submits_and_says_what_next(harness, tmp_path, fake_slurm,
                                                                          capsys):  # fmt: skip
    out = tmp_path / "study"
    args = ["compare", *SMALL, "--methods", "sgd", "--no-flatness", "--out", str(out), "--launcher",
            "slurm", "--slurm-partition", "gpu", "--slurm-time", "30", "--no-wait"]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "#SBATCH --partition=gpu" in fake_slurm.read_text().splitlines()
    assert "0/1 runs finished, 1 waiting" in printed and f"samkit report {out}" in printed
    assert "report: " not in printed and not (out / "report.md").exists()  # no report yet
