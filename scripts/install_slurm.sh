#!/usr/bin/env bash
# Install what scripts/slurm_cluster.sh needs: Debian's munge, slurmctld, slurmd and slurm-client (Slurm 22.05 on
# Debian 12). Idempotent: prints nothing and exits 0 when they are already there. Exits non-zero, saying why, when
# they are missing and cannot be installed (not root, no apt-get, no network).
set -euo pipefail

PACKAGES=(munge slurmctld slurmd slurm-client)
COMMANDS=(munged munge unmunge mungekey slurmctld slurmd slurmstepd sbatch squeue sinfo scontrol scancel srun)

have_all() {
  local c
  for c in "${COMMANDS[@]}"; do
    PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null || return 1
  done
}

have_all && exit 0

missing=$(for c in "${COMMANDS[@]}"; do PATH=$PATH:/usr/sbin:/sbin command -v "$c" >/dev/null || echo "$c"; done | xargs)
if [ "$(id -u)" != 0 ]; then
  echo "install_slurm: missing $missing; installing ${PACKAGES[*]} needs root (run as root, or install them)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "install_slurm: missing $missing, and there is no apt-get here: install munge and Slurm by hand" >&2
  exit 1
fi
echo "install_slurm: installing ${PACKAGES[*]} (missing: $missing)" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
# The packages' postinst scripts try to start the services; without systemd that fails harmlessly, and
# policy-rc.d is not needed: nothing is left running (slurm_cluster.sh starts its own daemons).
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
  tail -n 20 "$log" >&2
  echo "install_slurm: apt-get failed (output above)" >&2
  exit 1
fi
if ! have_all; then
  echo "install_slurm: installed, but still missing: $(for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null || echo "$c"; done | xargs)" >&2
  exit 1
fi
echo "install_slurm: done ($(slurmctld -V))" >&2
