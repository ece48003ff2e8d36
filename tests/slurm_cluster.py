"""A real single-node Slurm cluster for the tests: the session fixture `slurm_cluster`.

    from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (the fixture, registered by the import)

    @pytest.mark.slurm
    @pytest.mark.slow
    def test_x(slurm_cluster: SlurmCluster, tmp_path):
        job = slurm_cluster.sbatch("--array=0-3", "--wrap", "echo $SLURM_ARRAY_TASK_ID > t_$SLURM_ARRAY_TASK_ID")
        states = slurm_cluster.wait_all([job], timeout=60)   # {"12_0": "COMPLETED", ...}

The cluster (scripts/slurm_cluster.sh) starts once per pytest session, in a folder under /tmp, on free ports; it
stops at the end of the session, also when tests fail. While it runs, os.environ holds SLURM_CONF=<dir>/slurm.conf
and PATH starts with <dir>/bin (a `sacct` that works without slurmdbd), so sbatch, squeue, scontrol, scancel,
sacct and submitit in this process and in its subprocesses all talk to it. Several test modules may import the
fixture: they share one cluster.

It skips, saying why, when the tests do not run as root or when scripts/install_slurm.sh cannot install the
Debian packages; with MUSO_REQUIRE_SLURM=1 (CI) those cases fail instead. MUSO_SLURM_KEEP=1 keeps the cluster's
folder (config, daemon logs, jobcomp log) after the session.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pytest

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
INSTALL_SCRIPT = REPO / "scripts" / "install_slurm.sh"
PARTITION = "debug"

# Job states after which a job does not run again (PREEMPTED and REQUEUED ones go back to PENDING).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "REVOKED", "SPECIAL_EXIT"}


def is_final(state: str) -> bool:
    """True for a state in which a job has ended for good ("CANCELLED by 0" counts as CANCELLED)."""
    return state.split(" ")[0].rstrip("+") in FINAL_STATES


@dataclass
class SlurmCluster:
    """A running cluster: its folder, its partition, and helpers that run the Slurm commands against it."""

    dir: Path
    partition: str = PARTITION
    env: dict[str, str] = field(default_factory=dict)  # what the fixture put in os.environ

    @property
    def conf(self) -> Path:
        return self.dir / "slurm.conf"

    @property
    def jobcomp_log(self) -> Path:
        """One line per ended job run (jobcomp/filetxt); a requeued run is logged with JobState=PENDING."""
        return self.dir / "jobcomp.log"

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run a command with this cluster's environment; return its stdout."""
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited with {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def sbatch(self, *args: str, script: str | None = None, cwd: str | Path | None = None) -> str:
        """Submit a job (`sbatch --parsable ARGS [SCRIPT]`); return its id (an array's id for an array).

        script: the text of a batch script (written to a file in the cluster folder), or None for `--wrap`.
        """
        cmd = ["sbatch", "--parsable", f"--partition={self.partition}", *args]
        if script is not None:
            fd, path = tempfile.mkstemp(prefix="job-", suffix=".sh", dir=self.dir)
            with os.fdopen(fd, "w") as f:
                f.write(script)
            os.chmod(path, 0o755)
            cmd.append(path)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd,
                              env={**os.environ, **self.env})
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]  # "ID" or "ID;cluster"

    def states(self, job_ids: Iterable[str]) -> dict[str, str]:
        """State of each job run, as sacct names it: {"12": "COMPLETED", "13_0": "RUNNING", "13_[1-3]": "PENDING"}.

        An array's id gives all its tasks. Ended jobs are known for MinJobAge (300 s) through scontrol, then through
        the jobcomp log (see DIR/bin/sacct).
        """
        args = [a for j in job_ids for a in ("-j", str(j))]
        if not args:
            return {}
        out = self.run("sacct", "--parsable2", "--noheader", "--format=JobID,State", *args)
        return dict(line.split("|", 1) for line in out.splitlines() if "|" in line)

    def info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` of one job (of one array task with "ID_TASK") as a dict (Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id))
        line = out.splitlines()[0]
        return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)

    def wait_all(self, job_ids: Iterable[str], timeout: float = 120, poll: float = 0.2) -> dict[str, str]:
        """Wait until every job (every task of an array) has ended for good; return their states.

        Raises TimeoutError with squeue's view and the daemon logs when they have not ended after `timeout` s.
        A requeued job is not ended: it is PENDING again until its next run ends.
        """
        job_ids = [str(j) for j in job_ids]
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            states = self.states(job_ids)
            known = {s.split("_")[0] for s in states}
            if states and all(j.split("_")[0] in known for j in job_ids) and all(map(is_final, states.values())):
                return states
            if time.monotonic() > deadline:
                queue = self.run("squeue", "--all", check=False)
                raise TimeoutError(f"jobs {job_ids} not finished after {timeout} s: {states}\n{queue}\n{self.logs()}")
            time.sleep(poll)

    def logs(self, lines: int = 30) -> str:
        """The last lines of the daemon logs (for error messages)."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.dir / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"---- {path}\n" + "\n".join(tail))
        return "\n".join(parts)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port_pair(first: int = 6817, last: int = 6999) -> tuple[int, int]:
    """Two consecutive free ports for slurmctld and slurmd, from Slurm's own 6817 on (outside the ephemeral range)."""
    for port in range(first, last, 2):
        if _port_free(port) and _port_free(port + 1):
            return port, port + 1
    raise RuntimeError(f"no two free ports between {first} and {last}")


def _unavailable(reason: str) -> None:
    _shared["skip"] = reason
    if os.environ.get("MUSO_REQUIRE_SLURM") == "1":
        pytest.fail(f"MUSO_REQUIRE_SLURM=1, but the Slurm cluster cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _script(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=timeout, env=env)


_shared: dict = {"cluster": None, "users": 0, "skip": None}


def _start() -> SlurmCluster:
    if _shared["skip"]:
        _unavailable(_shared["skip"])
    if os.geteuid() != 0:
        _unavailable("the Slurm tests need root (the harness starts munged, slurmctld and slurmd; "
                     "slurmd runs jobs as their users)")
    install = _script(str(INSTALL_SCRIPT), timeout=900)
    if install.returncode != 0:
        _unavailable(f"the Slurm packages cannot be installed: {(install.stdout + install.stderr).strip()}")
    # Not pytest's tmp_path: /tmp/pytest-of-root is closed to others, and munged runs as user munge.
    root = Path(tempfile.mkdtemp(prefix="muso-slurm-"))
    ctld_port, slurmd_port = free_port_pair()
    env = {**os.environ, "MUSO_SLURM_CTLD_PORT": str(ctld_port), "MUSO_SLURM_SLURMD_PORT": str(slurmd_port),
           "MUSO_SLURM_PARTITION": PARTITION}
    started = _script(str(CLUSTER_SCRIPT), "start", str(root), env=env, timeout=120)
    if started.returncode != 0:
        _script(str(CLUSTER_SCRIPT), "stop", str(root), timeout=120)
        pytest.fail(f"the Slurm cluster did not start (folder {root}):\n{started.stdout}{started.stderr}",
                    pytrace=False)
    return SlurmCluster(dir=root, partition=PARTITION,
                        env={"SLURM_CONF": str(root / "slurm.conf"),
                             "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"})


def _stop(cluster: SlurmCluster) -> None:
    stopped = _script(str(CLUSTER_SCRIPT), "stop", str(cluster.dir), timeout=120)
    if stopped.returncode != 0:
        raise RuntimeError(f"the Slurm cluster did not stop cleanly:\n{stopped.stdout}{stopped.stderr}")
    if os.environ.get("MUSO_SLURM_KEEP") != "1":
        shutil.rmtree(cluster.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm cluster for the whole session (see the module's docstring)."""
    if _shared["cluster"] is None:
        _shared["cluster"] = _start()
    cluster: SlurmCluster = _shared["cluster"]
    _shared["users"] += 1
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    try:
        yield cluster
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["cluster"] = None
            _stop(cluster)
