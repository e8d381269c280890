#!/usr/bin/env bash
# Installs Slurm (Debian's slurm-wlm and munge) when it is missing, and writes the configuration
# of a single-node cluster (slurmctld and slurmd on this machine) into a directory of its own,
# so that the real-Slurm tests (tests/study/test_slurm_real.py) can run `peftlab study
# --executor submitit` through sbatch. Idempotent: a second call installs nothing and rewrites
# the same configuration.
#
#   scripts/install-slurm.sh [DIR]          install, then configure DIR (default $PEFTLAB_SLURM_DIR
#                                           or /tmp/peftlab-slurm)
#   scripts/install-slurm.sh start [DIR]    start munged, slurmctld and slurmd (no systemd needed);
#                                           waits until `sinfo` shows the node idle
#   scripts/install-slurm.sh stop [DIR]     stop them (by the pid files in DIR) and wait until gone
#
# PEFTLAB_SLURM_GPUS=N (configure) gives the node N fake GPUs: a gpu gres whose device files are links to
# /dev/null in DIR/dev, so jobs asking for GPUs are scheduled and told theirs (CUDA_VISIBLE_DEVICES) as on a GPU
# node, and train on the CPU.
#
# The cluster is meant for containers and CI machines: no cgroups (proctrack/linuxproc,
# task/none), no accounting database (sacct has nothing to say, so submitit learns that a job
# ended from its result file only), jobs run as the submitting user (root in CI). Every client
# command needs SLURM_CONF=DIR/slurm.conf in its environment; jobs inherit it through sbatch.
# Installs only when apt may be used (root, or passwordless sudo); otherwise says so in one line
# and exits 0 (the tests then skip, naming the reason). Exits 1 when apt may be used and fails.
set -u

action=configure
case "${1-}" in start | stop) action=$1; shift ;; esac
dir=$(realpath -m "${1:-${PEFTLAB_SLURM_DIR:-/tmp/peftlab-slurm}}")
conf="$dir/slurm.conf"

install_packages() {
  local missing=()
  for tool in sbatch:slurm-wlm slurmctld:slurm-wlm slurmd:slurm-wlm munged:munge; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || [[ " ${missing[*]-} " == *" ${tool#*:} "* ]] || missing+=("${tool#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; fi
  if ! command -v apt-get >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; }; then
    echo "install-slurm: warning: missing Debian packages ${missing[*]} (apt-get is not available or not permitted);" \
         "the real-Slurm tests will skip" >&2
    exit 0
  fi
  echo "install-slurm: installing Debian packages ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local start; start=$(date +%s)
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1 \
         && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
    || { echo "install-slurm: error: apt-get could not install ${missing[*]}" >&2; exit 1; }
  echo "install-slurm: installed ${missing[*]} in $(( $(date +%s) - start )) s"
}

configure() {
  # the node as slurmd sees this machine (CPUs, sockets, cores, memory); its name is the host's
  local node host user gpus gres=""
  gpus=${PEFTLAB_SLURM_GPUS:-0}
  [[ "$gpus" =~ ^[0-9]+$ ]] || { echo "install-slurm: error: PEFTLAB_SLURM_GPUS=$gpus is not a count" >&2; exit 1; }
  [ "$gpus" -gt 0 ] && gres=yes
  node=$(slurmd -C 2>/dev/null | head -n 1)
  host=$(hostname -s)
  user=$(id -un)
  [[ "$node" == NodeName=* ]] || { echo "install-slurm: error: slurmd -C did not describe this node" >&2; exit 1; }
  mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/run" "$dir/munge"
  chmod 700 "$dir/munge"
  if [ ! -s "$dir/munge/munge.key" ]; then
    (umask 077; head -c 1024 /dev/urandom > "$dir/munge/munge.key")
  fi
  chmod 600 "$dir/munge/munge.key"
  cat > "$conf.tmp" <<EOF
# single-node cluster for peftlab's tests, written by scripts/install-slurm.sh
ClusterName=peftlab
SlurmctldHost=$host
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmctldPort=${PEFTLAB_SLURMCTLD_PORT:-6817}
SlurmdPort=${PEFTLAB_SLURMD_PORT:-6818}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
${gres:+GresTypes=gpu}
# no cgroups: processes tracked by their parent pids, no task binding, no accounting daemon
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# a node that went down comes back as soon as its slurmd registers; short waits for fast tests. KillWait stays 5: a
# cancelled job whose process lets SIGTERM pass (submitit's) ended 7 s after scancel with KillWait=1, against 5 s
# here (slurmd waits at least 5 s before its SIGKILL, and an srun that gave up sooner makes its step end later)
ReturnToService=2
KillWait=5
MinJobAge=60
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
$node${gres:+ Gres=gpu:$gpus}
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -n "$gres" ]; then
    # fake GPUs (PEFTLAB_SLURM_GPUS=N): Slurm schedules a gpu gres by its device files and names them to each job
    # (CUDA_VISIBLE_DEVICES, SLURM_JOB_GPUS: the file's number); it wants a character device, so DIR/dev/nvidiaN
    # are links to /dev/null
    mkdir -p "$dir/dev"
    echo "AutoDetect=off" > "$dir/gres.conf.tmp"
    for ((i = 0; i < gpus; i++)); do
      ln -sfn /dev/null "$dir/dev/nvidia$i"
      echo "Name=gpu File=$dir/dev/nvidia$i" >> "$dir/gres.conf.tmp"
    done
    mv "$dir/gres.conf.tmp" "$dir/gres.conf"
  else
    rm -f "$dir/gres.conf"
  fi
  mv "$conf.tmp" "$conf"
  echo "install-slurm: cluster configured in $conf (node $host; export SLURM_CONF=$conf)"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  [ -f "$conf" ] || { echo "install-slurm: error: $conf does not exist (run scripts/install-slurm.sh $dir)" >&2; exit 1; }
  export SLURM_CONF="$conf"
  if ! pid_alive "$dir/run/munged.pid"; then
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
      --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed" \
      || { echo "install-slurm: error: munged did not start (see $dir/log/munged.log)" >&2; exit 1; }
  fi
  # -c: a clean start (no jobs or node states of an earlier cluster in this directory)
  pid_alive "$dir/run/slurmctld.pid" || slurmctld -c -f "$conf" \
    || { echo "install-slurm: error: slurmctld did not start (see $dir/log/slurmctld.log)" >&2; exit 1; }
  pid_alive "$dir/run/slurmd.pid" || slurmd -f "$conf" \
    || { echo "install-slurm: error: slurmd did not start (see $dir/log/slurmd.log)" >&2; exit 1; }
  local deadline=$(( $(date +%s) + ${PEFTLAB_SLURM_START_SECONDS:-60} ))
  until [ "$(sinfo -h -N -o %t 2>/dev/null | head -n 1)" = idle ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "install-slurm: error: the node is not idle after ${PEFTLAB_SLURM_START_SECONDS:-60} s" \
           "(sinfo: $(sinfo -h -N -o '%N %t %E' 2>&1 | head -n 1); see $dir/log)" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "install-slurm: cluster up (SLURM_CONF=$conf)"
}

stop() {
  local name pid pids=() deadline
  if pid_alive "$dir/run/slurmctld.pid"; then  # jobs first, so that no slurmstepd outlives its slurmd
    export SLURM_CONF="$conf"
    scancel --quiet --full --user="$(id -un)" 2>/dev/null
    deadline=$(( $(date +%s) + 20 ))
    while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
  fi
  # the three together: each takes a second or two to end after its SIGTERM
  for name in slurmd slurmctld munged; do
    pid_alive "$dir/run/$name.pid" || continue
    pid=$(cat "$dir/run/$name.pid")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  deadline=$(( $(date +%s) + 20 ))
  for pid in ${pids[@]+"${pids[@]}"}; do
    while kill -0 "$pid" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  echo "install-slurm: cluster stopped"
}

case $action in
  configure) install_packages; configure ;;
  start) start ;;
  stop) stop ;;
esac
