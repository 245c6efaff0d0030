#!/usr/bin/env bash
# Install the Debian packages the SLURM tests need (tests/slurm_cluster.py starts a one-node
# cluster on localhost from them). Quiet and exit 0 when they are already installed; exit 1 with
# a message when they cannot be installed (no root, no network, not Debian): the tests marked
# `slurm` then skip with the reason, and CI goes on (.ci/run does not stop on this script).
set -uo pipefail

have_all() {
  for b in munged mungekey slurmctld slurmd sbatch squeue sinfo scontrol srun scancel; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || return 1
  done
}

have_all && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-slurm: apt-get not found (not Debian/Ubuntu); SLURM tests will be skipped" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-slurm: not root and no password-less sudo; SLURM tests will be skipped" >&2
    exit 1
  fi
fi

log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq >"$log" 2>&1 &&
   $SUDO apt-get install -y -qq --no-install-recommends slurm-wlm slurm-client munge >>"$log" 2>&1 &&
   have_all; then
  rm -f "$log"
  exit 0
fi
echo "install-slurm: could not install slurm-wlm/munge (see below); SLURM tests will be skipped" >&2
tail -n 5 "$log" >&2
rm -f "$log"
exit 1
