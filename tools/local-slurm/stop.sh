#!/usr/bin/env bash
# stop.sh - stop only the daemons that start.sh started
# (pid files in /run/local-slurm). Running jobs are cancelled first.
# Packages, configuration, state and the accounting database are kept.
set -uo pipefail
STATE_DIR=/run/local-slurm
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -d "$STATE_DIR" ] || { echo "nothing to stop ($STATE_DIR missing)"; exit 0; }

# our pid for daemon <name>, if that process still runs under that name
ourpid() {
  local pf=$STATE_DIR/$1.pid pid
  [ -s "$pf" ] || return 1
  pid=$(tr -dc '0-9' < "$pf")
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]; then
    echo "$pid"
  else
    rm -f "$pf"; return 1   # stale
  fi
}

# cancel jobs if the controller is ours and answering
if ourpid slurmctld >/dev/null && scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// }" ]; then
    echo "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 1 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi

for d in slurmd slurmctld slurmdbd mariadbd munged; do
  pid=$(ourpid "$d") || continue
  printf 'stopping %s (pid %s)' "$d" "$pid"
  t0=$(date +%s%N)
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "  $d did not exit after 30 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$STATE_DIR/$d.pid"
  echo " ... $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
echo "stopped"
