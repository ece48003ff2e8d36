#!/usr/bin/env bash
# A throw-away single-node Slurm cluster for tests and development (root only; Debian's Slurm 22.05).
#
#   scripts/slurm_cluster.sh start  DIR   write DIR/slurm.conf, start munged, slurmctld and slurmd, wait for the node
#   scripts/slurm_cluster.sh stop   DIR   cancel the jobs, stop the daemons by their pid files, wait for them to exit
#   scripts/slurm_cluster.sh status DIR   print the daemons and the node; exit 0 only when all are up
#   scripts/slurm_cluster.sh env    DIR   print `export SLURM_CONF=DIR/slurm.conf PATH=DIR/bin:$PATH`
#                                         (use: eval "$(scripts/slurm_cluster.sh env DIR)")
#
# Everything lives under DIR: the config, state, spool, logs, pid files and the munge socket, so nothing touches
# /etc/slurm, and several clusters can run side by side when they use different ports. start and stop are
# idempotent. Client commands (sbatch, squeue, submitit, ...) find the cluster through SLURM_CONF=DIR/slurm.conf.
# DIR/bin/sacct stands in for sacct, which needs slurmdbd (not run here): put DIR/bin first on PATH.
#
# Settings (environment variables, read by start):
#   MUSO_SLURM_CTLD_PORT    slurmctld port                         [6817]
#   MUSO_SLURM_SLURMD_PORT  slurmd port                            [6818]
#   MUSO_SLURM_CPUS         CPUs of the node                       [nproc]
#   MUSO_SLURM_PARTITION    name of the (default) partition        [debug]
#   MUSO_SLURM_TIMEOUT      seconds to wait for the node at start  [60]
#   MUSO_SLURM_CRED_EXPIRE  credential lifetime, which is also how long a requeued job waits before it may
#                           start again (Slurm's default: 120)     [10]
# The munge key is /etc/munge/munge.key (created when missing); install the packages with scripts/install_slurm.sh.
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
D=$(realpath -m -- "$2")
CONF=$D/slurm.conf
MUNGE_SOCKET=$D/munge/munge.socket
MUNGE_KEY=/etc/munge/munge.key
export SLURM_CONF=$CONF

log() { echo "slurm_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

# true when the process exists and is not a zombie (pid 1 here may be slow to reap)
alive() {
  local st
  st=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pid of a daemon from its pid file, printed only when that process is alive and is the expected program
live_pid() {  # name pidfile
  local name=$1 file=$2 pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' <"$file")
  [ -n "$pid" ] && alive "$pid" || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  echo "$pid"
}

wait_gone() {  # pid seconds
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  return 1
}

stop_daemon() {  # name pidfile
  local pid
  if pid=$(live_pid "$1" "$2"); then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 15; then
      log "$1 ($pid) ignored SIGTERM for 15 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || log "warning: $1 ($pid) still alive"
    fi
  fi
  rm -f "$2"
}

# All pids whose parent chain leads to $1 (children first is not needed: they are killed together).
descendants() {
  local root=$1
  ps -e -o pid=,ppid= | awk -v root="$root" '
    { parent[$1] = $2; pids[NR] = $1 }
    END { for (i in pids) { p = pids[i]; q = parent[p]; n = 0
            while (q > 1 && n++ < 64) { if (q == root) { print p; break } q = parent[q] } } }'
}

# slurmstepd processes launched by this cluster's slurmd (they inherit SLURM_CONF=DIR/slurm.conf).
our_stepds() {
  local p
  for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
    alive "$p" || continue
    if { tr '\0' '\n' <"/proc/$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$CONF"; then echo "$p"; fi
  done
}

orphans() {
  local f p q mine=" $$ "
  q=$$
  while [ "$q" -gt 1 ] 2>/dev/null; do
    q=$(awk '{ print $4 }' "/proc/$q/stat" 2>/dev/null || echo 0)
    mine+="$q "
  done
  # shellcheck disable=SC2013  # file names from /proc have no spaces
  for f in $(grep -lzxF "SLURM_CONF=$CONF" /proc/[0-9]*/environ 2>/dev/null); do
    p=${f#/proc/}
    p=${p%/environ}
    if [[ $mine == *" $p "* ]]; then continue; fi
    if alive "$p" && grep -qz '^SLURM_JOB_ID=' "$f" 2>/dev/null; then echo "$p"; fi
  done
}

port_in_use() {  # port
  local hex
  hex=$(printf '%04X' "$1")
  awk -v h=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

node_state() { timeout 10 sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -1; }

show_logs() {
  local f
  for f in "$D/log/munged.log" "$D/log/slurmctld.log" "$D/log/slurmd.log"; do
    if [ -f "$f" ]; then echo "---- $f (last 30 lines)"; tail -n 30 "$f"; fi
  done >&2
}

all_alive() {
  live_pid munged "$D/run/munged.pid" >/dev/null && live_pid slurmctld "$D/run/slurmctld.pid" >/dev/null &&
    live_pid slurmd "$D/run/slurmd.pid" >/dev/null
}

write_conf() {
  local cpus mem_mb first_id
  cpus=${MUSO_SLURM_CPUS:-$(nproc)}
  # RealMemory a bit below the machine's: a node that reports less memory than configured is drained.
  mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  # slurmctld starts with a clean state (-c), which would restart job ids at 1: continue after the ids that
  # the completion log already holds, so that ids never repeat within DIR.
  first_id=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^JobId=[0-9]+$/) { n = substr($i, 7) + 0; if (n > m) m = n } }
                  END { print m + 1 }' "$D/jobcomp.log" 2>/dev/null || echo 1)
  cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh; rewritten at every start.
ClusterName=muso
SlurmctldHost=localhost
SlurmctldPort=${MUSO_SLURM_CTLD_PORT:-6817}
SlurmdPort=${MUSO_SLURM_SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=${MUSO_SLURM_CRED_EXPIRE:-10}
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
FirstJobId=$first_id
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/jobcomp.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=${MUSO_SLURM_PARTITION:-debug} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

# Slurm's own sacct needs slurmdbd (and MariaDB); without it, it only says "Slurm accounting storage is
# disabled", and submitit then never learns the state of a job that died without writing its result.
# DIR/bin/sacct answers the usual questions from scontrol and the jobcomp log: put DIR/bin first on PATH.
write_sacct() {
  mkdir -p "$D/bin"
  cat >"$D/bin/sacct" <<'PYEOF'
#!/usr/bin/env python3
"""sacct for a cluster without slurmdbd (written by scripts/slurm_cluster.sh; the real sacct only says
"Slurm accounting storage is disabled"). Answers the common forms, e.g. submitit's
`sacct -o JobID,State,NodeList --parsable2 -j 12 -j 13`, from `scontrol show job` (jobs that ended less than
MinJobAge ago, and all live ones) and from the jobcomp/filetxt log (older ones). Job steps are not listed.
Options: -j/--jobs ID[,ID], -o/--format F[,F], -P/--parsable2, -p/--parsable, -n/--noheader; others ignored."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("SLURM_CONF", os.path.join(HERE, "slurm.conf"))
KEY = re.compile(r"(?:^|\s)([A-Za-z/:_]+)=")
FIELDS = {"jobid": None, "jobidraw": "JobId", "jobname": "JobName", "state": "JobState", "nodelist": "NodeList",
          "exitcode": "ExitCode", "start": "StartTime", "end": "EndTime", "submit": "SubmitTime",
          "partition": "Partition", "user": "UserId", "timelimit": "TimeLimit", "elapsed": "RunTime",
          "alloccpus": "NumCPUs", "workdir": "WorkDir", "restarts": "Restarts"}


def parse(line):
    keys = list(KEY.finditer(line))
    return {m.group(1): line[m.end():keys[i + 1].start() if i + 1 < len(keys) else len(line)].strip()
            for i, m in enumerate(keys)}


def jobcomp_path():
    try:
        with open(os.environ["SLURM_CONF"]) as f:
            for line in f:
                if line.strip().lower().startswith("jobcomploc="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return os.path.join(HERE, "jobcomp.log")


def from_scontrol(job):
    cmd = ["scontrol", "show", "job", "-o"] + ([job] if job else [])
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return [parse(line) for line in out.splitlines() if line.startswith("JobId=")]


def from_jobcomp(job):
    last = {}
    try:
        with open(jobcomp_path()) as f:
            for line in f:
                rec = parse(line)
                if "JobId" not in rec:
                    continue
                rec["JobName"] = rec.get("Name", "")
                if rec.get("JobState") == "PENDING":  # the record of a run that was requeued
                    continue
                if job is None or job in (rec["JobId"], rec.get("ArrayJobId")) or \
                        job == f"{rec.get('ArrayJobId')}_{rec.get('ArrayTaskId')}":
                    last[rec["JobId"]] = rec
    except OSError:
        pass
    return list(last.values())


def job_id(rec):
    arr, task = rec.get("ArrayJobId", ""), rec.get("ArrayTaskId", "")
    if arr and task and arr != "(null)":
        return f"{arr}_[{task}]" if re.search(r"[-,%]", task) else f"{arr}_{task}"
    return rec["JobId"]


def main(argv):
    jobs, fmt, sep, header = [], "JobID,JobName,Partition,State,ExitCode", None, True
    i = 0
    while i < len(argv):
        a = argv[i]
        val = None
        for opt in ("-j", "--jobs", "-o", "--format"):
            if a == opt and i + 1 < len(argv):
                val, i = argv[i + 1], i + 1
            elif a.startswith(opt + "=") or (len(opt) == 2 and a.startswith(opt) and len(a) > 2):
                val = a.split("=", 1)[1] if a.startswith(opt + "=") else a[2:]
            else:
                continue
            if opt in ("-j", "--jobs"):
                jobs += [j for j in val.split(",") if j]
            else:
                fmt = val
            break
        if val is None:
            if a in ("-P", "--parsable2"):
                sep = ("|", False)
            elif a in ("-p", "--parsable"):
                sep = ("|", True)
            elif a in ("-n", "--noheader"):
                header = False
            elif a in ("-h", "--help"):
                print(__doc__)
                return 0
        i += 1
    fields = [f.split("%")[0] for f in fmt.split(",") if f]
    recs, seen = [], set()
    for job in jobs or [None]:
        found = from_scontrol(job)
        known = {r["JobId"] for r in found}
        found += [r for r in from_jobcomp(job) if r["JobId"] not in known]
        for r in found:
            if r["JobId"] not in seen:
                seen.add(r["JobId"])
                recs.append(r)
    recs.sort(key=lambda r: (int(r.get("ArrayJobId") or r["JobId"]) if (r.get("ArrayJobId") or r["JobId"]).isdigit()
                             else 0, job_id(r)))
    rows = []
    for r in recs:
        row = []
        for f in fields:
            key = FIELDS.get(f.lower(), f)
            row.append(job_id(r) if key is None else r.get(key, ""))
        rows.append(row)
    if header:
        rows.insert(0, fields)
    for row in rows:
        if sep:
            print(sep[0].join(row) + (sep[0] if sep[1] else ""))
        else:
            print(" ".join(c[:20].rjust(20) if k else c[:20].ljust(20) for k, c in enumerate(row)))
    return 0


sys.exit(main(sys.argv[1:]))
PYEOF
  chmod 0755 "$D/bin/sacct"
}

start_munged() {
  local i
  if live_pid munged "$D/run/munged.pid" >/dev/null; then return 0; fi
  if [ ! -s "$MUNGE_KEY" ]; then
    log "creating the munge key $MUNGE_KEY"
    mkdir -p "$(dirname "$MUNGE_KEY")"
    mungekey --create --keyfile="$MUNGE_KEY"
    chown munge:munge "$(dirname "$MUNGE_KEY")" "$MUNGE_KEY"
    chmod 0700 "$(dirname "$MUNGE_KEY")"
    chmod 0600 "$MUNGE_KEY"
  fi
  mkdir -p "$D/munge"
  chown munge:munge "$D/munge"
  chmod 0755 "$D/munge"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  runuser -u munge -- test -x "$D/munge" ||
    die "user munge cannot reach $D/munge (a parent folder is closed to others); pick a DIR under an open folder"
  # munged refuses a log file in a folder that others can write to: keep its log in DIR/munge.
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$D/munge/munged.pid" \
    --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" ||
    { show_logs; die "munged did not start"; }
  ln -sf "$D/munge/munged.pid" "$D/run/munged.pid"
  ln -sf "$D/munge/munged.log" "$D/log/munged.log"
  for ((i = 0; i < 100; i++)); do
    munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  show_logs
  die "munged is not answering on $MUNGE_SOCKET"
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as their users)"
  local b
  for b in munged munge slurmctld slurmd sinfo sbatch; do
    command -v "$b" >/dev/null || die "$b not found: run scripts/install_slurm.sh"
  done
  if all_alive; then
    log "already running in $D (SLURM_CONF=$CONF)"
    return 0
  fi
  # A half-running cluster (a daemon died): stop what is left, then start afresh.
  stop quiet
  local ctld_port=${MUSO_SLURM_CTLD_PORT:-6817} slurmd_port=${MUSO_SLURM_SLURMD_PORT:-6818} p
  for p in "$ctld_port" "$slurmd_port"; do
    port_in_use "$p" && die "port $p is in use (another Slurm?): set MUSO_SLURM_CTLD_PORT / MUSO_SLURM_SLURMD_PORT"
  done
  mkdir -p "$D/log" "$D/run"
  chmod 0755 "$D"
  write_conf
  write_sacct
  local t0=$SECONDS start_us=${EPOCHREALTIME/[.,]/} timeout=${MUSO_SLURM_TIMEOUT:-60} state=""
  start_munged
  # -c: start from a clean state. Jobs of an earlier run in DIR are gone anyway (stop cancels them), and a
  # recovered job that was running when a daemon died would keep the node "completing" for minutes.
  rm -rf "$D/state" "$D/spool"
  mkdir -p "$D/state" "$D/spool"
  slurmctld -c -f "$CONF" || { show_logs; die "slurmctld did not start"; }
  # slurmd (and sinfo) started before slurmctld listens wait 1 s to try again: wait for the port first.
  local n=0
  until port_in_use "$ctld_port"; do
    if ((++n % 50 == 0)) && ! live_pid slurmctld "$D/run/slurmctld.pid" >/dev/null; then
      show_logs
      die "slurmctld exited during start; logs above"
    fi
    ((SECONDS - t0 < timeout)) || break
    sleep 0.02
  done
  slurmd -f "$CONF" -N localhost || { show_logs; die "slurmd did not start"; }
  while true; do
    state=$(node_state || true)
    case $state in
      idle) break ;;
    esac
    if ((SECONDS - t0 >= timeout)); then
      show_logs
      die "node not ready after ${timeout} s (sinfo state: '${state:-no answer}'); logs above, all in $D/log"
    fi
    all_alive || { sleep 0.5; all_alive || { show_logs; die "a daemon exited during start; logs above"; }; }
    sleep 0.1
  done
  local ms=$(((${EPOCHREALTIME/[.,]/} - start_us) / 1000))
  log "up in $((ms / 1000)).$(printf %03d $((ms % 1000))) s: node localhost $state; export SLURM_CONF=$CONF"
}

stop() {
  local quiet=${1:-} pid p ids n any=""
  for n in munged slurmctld slurmd; do live_pid "$n" "$D/run/$n.pid" >/dev/null && any=1; done
  [ -n "$any" ] || [ -n "$(our_stepds)" ] || { [ -n "$quiet" ] || log "not running ($D)"; return 0; }
  if live_pid slurmctld "$D/run/slurmctld.pid" >/dev/null && live_pid munged "$D/run/munged.pid" >/dev/null; then
    # Cancel the jobs first, so that slurmd ends them cleanly (job processes and their slurmstepd).
    ids=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086  # one argument per job id
      timeout 10 scancel --quiet $ids 2>/dev/null || true
      if live_pid slurmd "$D/run/slurmd.pid" >/dev/null; then
        for ((p = 0; p < 150; p++)); do  # KillWait=5 s at most, then SIGKILL
          [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && [ -z "$(our_stepds)" ] && break
          sleep 0.1
        done
      fi
    fi
  fi
  stop_daemon slurmd "$D/run/slurmd.pid"
  stop_daemon slurmctld "$D/run/slurmctld.pid"
  # Steps that outlived their slurmd (it died, or the jobs would not end): kill them and their processes.
  for pid in $(our_stepds); do
    log "killing the left-over slurmstepd $pid and its processes"
    # shellcheck disable=SC2046  # one argument per pid
    kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
  done
  # Job processes whose slurmstepd was already gone (Slurm puts SLURM_CONF and SLURM_JOB_ID in every job's
  # environment); never this script or its callers.
  for pid in $(orphans); do
    log "killing the left-over job process $pid ($(cat "/proc/$pid/comm" 2>/dev/null))"
    kill -KILL "$pid" 2>/dev/null || true
  done
  stop_daemon munged "$D/munge/munged.pid"
  rm -f "$D/run/munged.pid"
  [ -n "$quiet" ] || log "stopped ($D)"
}

status() {
  local rc=0 n f pid
  for n in munged slurmctld slurmd; do
    f=$D/run/$n.pid
    if pid=$(live_pid "$n" "$f"); then echo "$n: running (pid $pid)"; else echo "$n: stopped"; rc=1; fi
  done
  if [ $rc = 0 ]; then
    echo "node localhost: $(node_state || echo 'no answer')"
    echo "SLURM_CONF=$CONF"
  fi
  return $rc
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF PATH=$D/bin:\$PATH" ;;
  *) usage ;;
esac
