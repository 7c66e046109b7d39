#!/usr/bin/env bash
# vit_jax launcher: bootstraps .venv from requirements.txt (requirements-test.txt for
# `test`), then runs a job inside it.
#
#   ./launch.sh                          the main job: a small ViT on the scikit-learn digits
#   ./launch.sh test [PYTEST_ARGS...]    the whole test suite (what CI runs)
#   ./launch.sh models                   the table of named ViT variants
#   ./launch.sh configs/FILE.py[:ARGS] [--workdir=DIR] [--config.KEY=VALUE ...]
#                                        train/fine-tune with a config (default workdir:
#                                        workdirs/FILE_ARGS, e.g. workdirs/finetune_B_16_mnist)
#   ./launch.sh python ARGS...           any python command inside the environment
#
# Remote, on every worker of a Cloud TPU VM pod (copies this tree, installs jax[tpu],
# starts the same command on all workers, which find each other by themselves):
#   ./launch.sh --tpu=NAME --zone=ZONE [--project=P] [--dry-run] configs/FILE.py[:ARGS] \
#       --workdir=gs://BUCKET/DIR [--config.KEY=VALUE ...]
# --dry-run prints the exact gcloud commands instead of running them.
#
# Environment: PYTHON (interpreter used to create the venv, default python3),
# VIT_JAX_VENV (venv location, default .venv next to this file), VIT_JAX_BLOCK_CACHE=0
# (run without vit_jax/native/block_cache.c), VIT_JAX_BLOCK_CACHE_BYTES (what it may keep
# idle, default a quarter of the RAM), CC (the compiler that builds it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

venv="${VIT_JAX_VENV:-.venv}"
python="${PYTHON:-python3}"

squote() {  # a word for a remote shell: as is when safe, else in single quotes
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

remote_tpu() {  # args: the job's arguments (config and flags); uses $tpu $zone $project
  local where=(--zone="$zone") q job tarball remote_dir="vit_jax"
  [[ -n "$project" ]] && where+=(--project="$project")
  [[ $# -ge 1 && "$1" == configs/* ]] || {
    echo "launch.sh: --tpu needs a config: ./launch.sh --tpu=NAME --zone=ZONE configs/FILE.py[:ARGS] --workdir=gs://..." >&2
    exit 2; }
  [[ " $* " == *" --workdir="* ]] || {
    echo "launch.sh: --tpu needs --workdir=gs://BUCKET/DIR (storage every worker can reach)" >&2
    exit 2; }
  q="" ; for a in "$@"; do q+="$(squote "$a") "; done
  job="cd $remote_dir && nohup ./launch.sh ${q}--distributed > run.log 2>&1 &"
  tarball="${TMPDIR:-/tmp}/vit_jax_$$.tar.gz"
  local cmds=(
    "tar czf $tarball --exclude=./.venv --exclude=./workdirs --exclude=./.git ."
    "gcloud compute tpus tpu-vm scp $tarball $tpu:vit_jax.tar.gz --worker=all ${where[*]}"
    "gcloud compute tpus tpu-vm ssh $tpu --worker=all ${where[*]} --command=$(squote "mkdir -p $remote_dir && tar xzf vit_jax.tar.gz -C $remote_dir && cd $remote_dir && ./launch.sh python -m pip install -U 'jax[tpu]'")"
    "gcloud compute tpus tpu-vm ssh $tpu --worker=all ${where[*]} --command=$(squote "$job")"
  )
  for c in "${cmds[@]}"; do
    if [[ "$dry_run" == 1 ]]; then echo "$c"; else echo "+ $c" >&2; eval "$c"; fi
  done
  [[ "$dry_run" == 1 ]] || echo "launch.sh: started on every worker of $tpu; logs: ~/$remote_dir/run.log on each" >&2
}

tpu="" zone="" project="" dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu=*) tpu="${1#*=}"; shift ;;
    --zone=*) zone="${1#*=}"; shift ;;
    --project=*) project="${1#*=}"; shift ;;
    --dry-run) dry_run=1; shift ;;
    *) break ;;
  esac
done
if [[ -n "$tpu" ]]; then
  [[ -n "$zone" ]] || { echo "launch.sh: --tpu=$tpu needs --zone=ZONE" >&2; exit 2; }
  remote_tpu "$@"
  exit 0
fi
if [[ -n "$zone$project" || "$dry_run" == 1 ]]; then
  echo "launch.sh: --zone/--project/--dry-run only go with --tpu=NAME" >&2; exit 2
fi

ensure_venv() {  # arg: the requirements file this command needs (installed once per content)
  local reqs="$1" want stamp
  stamp="$venv/.stamp-$reqs"
  want="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
  if [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    return
  fi
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "launch.sh: $python is missing or older than Python 3.10; set PYTHON=/path/to/python3.10+" >&2
    exit 1
  fi
  echo "launch.sh: installing $reqs into $venv (missing or stale)" >&2
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -r "$reqs" >&2
  echo "$want" > "$stamp"
}

if [[ "${1:-}" == test ]]; then ensure_venv requirements-test.txt; else ensure_venv requirements.txt; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# glibc's malloc returns XLA:CPU's per-step temporary buffer (77 MB for the MNIST preset)
# to the kernel after each step, and the next step faults it back 4 KiB at a time: 30% of
# that run's CPU time was in the kernel. Huge pages for malloc's blocks (glibc >= 2.35;
# older ones ignore it) cut the faults 24x and the run from 963 to ~1,150-1,235 images/s
# on a 2-core Zen 3.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
# Blocks above 32 MiB, such as a step's whole temporary block (1.59 GB for a Ti/16 train
# step), glibc still maps afresh for every step: vit_jax/native/block_cache.c keeps them
# mapped (Ti/16 train steps on a 2-core Xeon VM: ~1.43 s, against ~1.55 and ~1.95 s
# alternating). Built once per venv with the C compiler; without one, or with
# VIT_JAX_BLOCK_CACHE=0, jobs run without it.
ensure_block_cache() {
  local src=vit_jax/native/block_cache.c lib="$venv/lib/vit_jax_block_cache.so"
  [[ "${VIT_JAX_BLOCK_CACHE:-1}" != 0 && "$(uname -s)" == Linux ]] || return 0
  if [[ ! -f "$lib" || "$src" -nt "$lib" ]]; then
    if ! "${CC:-cc}" -O2 -shared -fPIC -o "$lib.tmp" "$src" -ldl -lpthread 2>/dev/null; then
      echo "launch.sh: could not build $src (no C compiler?): running without it" >&2
      return 0
    fi
    mv "$lib.tmp" "$lib"
  fi
  export LD_PRELOAD="$(cd "$(dirname "$lib")" && pwd)/${lib##*/}${LD_PRELOAD:+:$LD_PRELOAD}"
}
ensure_block_cache
py="$venv/bin/python"

case "${1:-}" in
  "")
    exec "$py" -m vit_jax.main --config=configs/default.py \
      --workdir="${VIT_JAX_WORKDIR:-workdirs/default}" ;;
  test)
    shift; exec "$py" -m pytest "$@" ;;
  models)
    shift; exec "$py" -m vit_jax.models "$@" ;;
  python)
    shift; exec "$py" "$@" ;;
  configs/*)
    config="$1"; shift
    workdir=()
    if [[ " $* " != *" --workdir="* ]]; then  # default: workdirs/<config>_<arg>
      name="$(basename "${config%%:*}" .py)"
      [[ "$config" == *:* ]] && name="${name}_${config#*:}"
      workdir=(--workdir="workdirs/$(echo "$name" | tr '/,' '__')")
    fi
    exec "$py" -m vit_jax.main --config="$config" "${workdir[@]}" "$@" ;;
  *)
    echo "launch.sh: unknown command '$1'. Use: (nothing) | test | models | python ARGS | configs/FILE.py[:ARGS] [flags]" >&2
    exit 2 ;;
esac
