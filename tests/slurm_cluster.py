"""A real single-node SLURM cluster on localhost, for tests of `snakemake --profile slurm`.

Uses Debian's `slurm-wlm` and `munge` (installed by `.ci/install-slurm.sh`). Everything lives in one
state directory (default: /tmp/tokensafe-slurm, or $TOKENSAFE_SLURM_DIR): a private munge key and
socket, slurm.conf / cgroup.conf, spool, state, pid and log files. Clients find the cluster through
SLURM_CONF (see `SlurmCluster.env`); /etc is touched only as described next.

Clients inside jobs need the configuration too, and the executor's job-step plugin
(snakemake-executor-plugin-slurm-jobstep 0.6.1) strips SLURM_CONF from the environment of the
`srun` it runs inside each job; so, when /etc/slurm/slurm.conf does not exist, the harness links it
(and cgroup.conf) to its own files for the cluster's lifetime and removes the links on `stop()`. An
existing, foreign /etc/slurm/slurm.conf is never replaced: the cluster then does not start.

The cluster has one node (this machine's CPUs and memory) and one partition, no slurmdbd: accounting
storage is `none`, so `sacct`/`sacctmgr` do not work. Job state is read with `squeue`, which keeps
finished jobs for MinJobAge seconds (set high here), and accounts are not enforced (`sbatch -A` is
accepted as a label).

    python tests/slurm_cluster.py start     # start (or restart) it; prints the environment to export
    python tests/slurm_cluster.py status
    python tests/slurm_cluster.py stop      # kill the daemons and remove the state directory

`start()` is idempotent: it first tears down whatever an earlier start left in the state directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PARTITION = "debug"
ACCOUNT = "tokensafe"
DEFAULT_DIR = Path(os.environ.get("TOKENSAFE_SLURM_DIR", "/tmp/tokensafe-slurm"))
GPUS = 1  # generic resources named gpu on the node, for the scheduler only (see _write_config)
# slurmd drops a gres/gpu without a File= ("Removing file-less GPU") and refuses a File= that is not a character
# device; these are character devices that nothing opens (TaskPlugin=task/none constrains no device).
FAKE_GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order
SYSTEM_CONF_DIR = Path("/etc/slurm")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run here (binaries missing, daemons do not start); tests skip with this reason."""


def find_binary(name: str) -> str | None:
    path = shutil.which(name)
    if path:
        return path
    for d in SBIN:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def missing_binaries() -> list[str]:
    need = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun"]
    return [b for b in need if find_binary(b) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _machine() -> tuple[int, int]:
    """CPUs usable by this process and total memory in MB."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    mem_mb = 1024
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
                break
    except OSError:
        pass
    return cpus, mem_mb


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (daemons are reparented, nobody reaps them)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class SlurmCluster:
    def __init__(
        self, state_dir: Path | str = DEFAULT_DIR, partition: str = PARTITION, account: str = ACCOUNT, gpus: int = GPUS
    ):
        self.dir = Path(state_dir)
        self.gpus = gpus
        self.partition = partition
        self.account = account
        self.node = socket.gethostname().split(".")[0] or "localhost"
        self.conf = self.dir / "etc" / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.jobcomp = self.dir / "log" / "jobcomp.txt"

    # ---------------------------------------------------------------- environment for clients
    @property
    def env(self) -> dict[str, str]:
        """Variables a client (sbatch, squeue, snakemake) needs to talk to this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        extra = [d for d in SBIN if d not in env.get("PATH", "").split(os.pathsep)]
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), *extra]).strip(os.pathsep)
        return env

    def run(self, *cmd: str, check: bool = True, timeout: int = 30) -> subprocess.CompletedProcess:
        binary = find_binary(cmd[0]) or cmd[0]
        proc = subprocess.run(
            [binary, *cmd[1:]],
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def finished_jobs(self) -> dict[str, dict]:
        """Every job that ended (id -> state, start, end), from the job completion log through `sacct -c`: this
        cluster has no slurmdbd for plain sacct. Times are whole seconds."""
        fields = ["id", "state", "start", "end"]
        out = self.run("sacct", "-c", "-n", "-P", "-o", "jobid,state,start,end").stdout
        return {row[0]: dict(zip(fields, row)) for row in (line.split("|") for line in out.splitlines() if line)}

    # ---------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 60) -> "SlurmCluster":
        missing = missing_binaries()
        if missing:
            raise ClusterUnavailable(
                f"SLURM/munge binaries not found: {', '.join(missing)} "
                "(run .ci/install-slurm.sh, Debian packages slurm-wlm and munge)"
            )
        self.stop()
        for sub in ("etc", "munge", "state", "spool", "log", "run"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(self.dir / "munge", 0o700)
        self._start_munge()
        self._write_config()
        self._link_system_config()
        self._start_daemon("slurmctld", [find_binary("slurmctld"), "-f", str(self.conf), "-i"])
        self._start_daemon("slurmd", [find_binary("slurmd"), "-f", str(self.conf), "-N", self.node])
        self._wait_idle(timeout)
        return self

    def stop(self) -> None:
        """Cancel leftover jobs, kill the daemons recorded in the state directory and remove it
        (safe to call twice, and on a directory that an interrupted run left behind)."""
        run = self.dir / "run"
        if (run / "slurmctld.pid").exists() and self.conf.exists():
            self._cancel_all()
        for name in DAEMONS:
            pidfile = run / f"{name}.pid"
            if not pidfile.exists():
                continue
            try:
                pid = int(pidfile.read_text().split()[0])
            except (ValueError, IndexError, OSError):
                continue
            self._kill(pid)
        self._unlink_system_config()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _cancel_all(self, timeout: float = 30) -> None:
        """scancel every job and wait until slurmd has killed their steps (they would outlive it)."""
        try:
            self.run("scancel", "--user", str(os.getuid()), check=False, timeout=10)
            deadline = time.time() + timeout
            while time.time() < deadline:
                proc = self.run(
                    "squeue",
                    "-h",
                    "-t",
                    "PENDING,RUNNING,COMPLETING,CONFIGURING,SUSPENDED",
                    "-o",
                    "%i",
                    check=False,
                    timeout=10,
                )
                if proc.returncode != 0 or not proc.stdout.strip():
                    return
                time.sleep(0.5)
        except (subprocess.SubprocessError, OSError):
            pass

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def is_up(self) -> bool:
        try:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False, timeout=10).stdout
        except (subprocess.SubprocessError, OSError):
            return False
        return any(line.split()[1:] in (["idle"], ["mix"], ["alloc"]) for line in out.splitlines() if line.strip())

    # ---------------------------------------------------------------- internals
    def _kill(self, pid: int, grace: float = 10) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            deadline = time.time() + grace
            while time.time() < deadline:
                if not _pid_alive(pid):
                    return
                time.sleep(0.1)

    def _start_munge(self) -> None:
        m = self.dir / "munge"
        key = m / "munge.key"
        if not key.exists():
            mungekey = find_binary("mungekey")
            if mungekey:
                subprocess.run([mungekey, "--create", f"--keyfile={key}"], check=True, capture_output=True)
            else:
                key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        cmd = [
            find_binary("munged"),
            f"--key-file={key}",
            f"--socket={self.munge_socket}",
            f"--pid-file={self.dir / 'run' / 'munged.pid'}",
            f"--log-file={self.dir / 'log' / 'munged.log'}",
            f"--seed-file={m / 'munged.seed'}",
        ]
        if os.getuid() == 0:
            cmd.append("--force")  # munged refuses some root-owned layouts without it
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"munged did not start: {proc.stderr.strip() or proc.stdout.strip()}")
        self._wait_for(lambda: self.munge_socket.exists(), 10, "munged socket")
        unmunge = find_binary("unmunge")
        munge = find_binary("munge")
        if munge and unmunge:
            cred = subprocess.run([munge, "-S", str(self.munge_socket), "-n"], capture_output=True, text=True)
            check = subprocess.run(
                [unmunge, "-S", str(self.munge_socket)], input=cred.stdout, capture_output=True, text=True
            )
            if cred.returncode != 0 or check.returncode != 0:
                raise ClusterUnavailable(f"munge round trip failed: {cred.stderr.strip()} {check.stderr.strip()}")

    def _write_config(self) -> None:
        cpus, mem_mb = _machine()
        user = "root" if os.getuid() == 0 else _username()
        d = self.dir
        # Leave some memory to the OS; jobs ask for --mem and must fit in RealMemory.
        real_mem = max(256, mem_mb - 512)
        ctld_port, slurmd_port = _free_port(), _free_port()
        self.conf.write_text(f"""\
# Single-node test cluster written by tests/slurm_cluster.py
ClusterName=tokensafe
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={d / "state"}
SlurmdSpoolDir={d / "spool"}
SlurmctldPidFile={d / "run" / "slurmctld.pid"}
SlurmdPidFile={d / "run" / "slurmd.pid"}
SlurmctldLogFile={d / "log" / "slurmctld.log"}
SlurmdLogFile={d / "log" / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (containers often lack a writable cgroup tree): plain process tracking
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: accounts are labels, sacct/sacctmgr are unavailable, squeue reports job states; every finished
# job is appended to a text file (start, end, TRES with the GPUs), which `sacct -c` reads (jobs())
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
# keep finished jobs visible to squeue for an hour (the executor plugin polls squeue)
MinJobAge=3600
SchedulerType=sched/backfill
# reject jobs that can never run here (e.g. more CPUs than the node has) instead of queueing forever
EnforcePartLimits=ALL
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
InactiveLimit=0
KillWait=5
Waittime=0
# GPUs as a counted generic resource without device files: sbatch --gpus/--gres is scheduled against the count
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_mem} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        if self.gpus > len(FAKE_GPU_FILES):
            raise ClusterUnavailable(f"at most {len(FAKE_GPU_FILES)} fake GPUs, not {self.gpus}")
        (self.conf.parent / "gres.conf").write_text(
            "".join(f"NodeName={self.node} Name=gpu File={f}\n" for f in FAKE_GPU_FILES[: self.gpus])
        )
        (self.conf.parent / "cgroup.conf").write_text(
            "# Not used (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none); present so that\n"
            "# tools which look for it next to slurm.conf find a harmless file.\n"
            "CgroupPlugin=autodetect\n"
        )

    def _link_system_config(self) -> None:
        """Point /etc/slurm/{slurm,cgroup}.conf at this cluster's files (see the module docstring)."""
        target = SYSTEM_CONF_DIR / "slurm.conf"
        if target.is_symlink() and not target.exists():
            target.unlink()  # dangling link left by a cluster that was not stopped
        if target.exists() or target.is_symlink():
            if target.resolve() != self.conf.resolve():
                raise ClusterUnavailable(
                    f"{target} exists and belongs to another SLURM installation; "
                    "not replacing it (jobs could not find the test cluster)"
                )
            return
        try:
            SYSTEM_CONF_DIR.mkdir(parents=True, exist_ok=True)
            links = []
            for name in ("slurm.conf", "cgroup.conf"):
                link = SYSTEM_CONF_DIR / name
                if link.is_symlink() and not link.exists():
                    link.unlink()
                if not link.exists() and not link.is_symlink():
                    link.symlink_to(self.conf.parent / name)
                    links.append(str(link))
        except OSError as e:
            raise ClusterUnavailable(f"cannot link {target} to {self.conf}: {e} (the jobs' srun needs it)") from e
        (self.dir / "run" / "links").write_text("\n".join(links) + "\n")

    def _unlink_system_config(self) -> None:
        record = self.dir / "run" / "links"
        if not record.exists():
            return
        for line in record.read_text().splitlines():
            link = Path(line.strip())
            if line.strip() and link.is_symlink() and str(os.readlink(link)).startswith(str(self.dir)):
                link.unlink()

    def _start_daemon(self, name: str, cmd: list[str]) -> None:
        proc = subprocess.run(cmd, env=self.environ(), capture_output=True, text=True, timeout=60)
        pidfile = self.dir / "run" / f"{name}.pid"
        if proc.returncode != 0:
            raise ClusterUnavailable(
                f"{name} did not start ({proc.returncode}): {proc.stderr.strip()}\n{self.log_tail(name)}"
            )
        try:
            self._wait_for(pidfile.exists, 15, f"{name} pid file")
        except ClusterUnavailable as e:
            raise ClusterUnavailable(f"{e}\n{self.log_tail(name)}") from e

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            try:
                proc = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False, timeout=10)
                last = (proc.stdout + proc.stderr).strip()
                if proc.returncode == 0 and any(line.split()[1:] == ["idle"] for line in proc.stdout.splitlines()):
                    return
                if "drain" in last or "down" in last:
                    # a node that registered with a mismatch: resume it once
                    self.run("scontrol", "update", f"NodeName={self.node}", "State=RESUME", check=False)
            except subprocess.SubprocessError:
                pass
            time.sleep(0.5)
        raise ClusterUnavailable(
            f"node {self.node} not idle after {timeout:.0f}s (sinfo: {last!r})\n"
            f"{self.log_tail('slurmctld')}\n{self.log_tail('slurmd')}"
        )

    def _wait_for(self, pred, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise ClusterUnavailable(f"timed out waiting for {what}")

    def log_tail(self, name: str, n: int = 15) -> str:
        log = self.dir / "log" / f"{name}.log"
        if not log.exists():
            return f"({log} missing)"
        return f"--- {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def _username() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    cluster = SlurmCluster()
    if cmd == "start":
        try:
            cluster.start()
        except ClusterUnavailable as e:
            print(f"SLURM cluster unavailable: {e}", file=sys.stderr)
            return 1
        print(f"export SLURM_CONF={cluster.conf}")
        print(cluster.run("sinfo").stdout, end="")
        return 0
    if cmd == "stop":
        cluster.stop()
        return 0
    if cmd == "status":
        up = cluster.conf.exists() and cluster.is_up()
        print("up" if up else "down")
        return 0 if up else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
