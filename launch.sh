#!/usr/bin/env bash
# vit_jax launcher: bootstraps .venv from requirements.txt, then runs a job inside it.
#
#   ./launch.sh                          the main job: a small ViT on the scikit-learn digits
#   ./launch.sh test [PYTEST_ARGS...]    the whole test suite (what CI runs)
#   ./launch.sh models                   the table of named ViT variants
#   ./launch.sh configs/FILE.py[:ARGS] [--workdir=DIR] [--config.KEY=VALUE ...]
#                                        train/fine-tune with a config (default workdir:
#                                        workdirs/FILE_ARGS, e.g. workdirs/finetune_B_16_mnist)
#   ./launch.sh python ARGS...           any python command inside the environment
#
# Environment: PYTHON (interpreter used to create the venv, default python3),
# VIT_JAX_VENV (venv location, default .venv next to this file).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

venv="${VIT_JAX_VENV:-.venv}"
python="${PYTHON:-python3}"

ensure_venv() {
  local want stamp="$venv/.requirements.sha256"
  want="$(sha256sum requirements.txt | cut -d' ' -f1)"
  if [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    return
  fi
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "launch.sh: $python is missing or older than Python 3.10; set PYTHON=/path/to/python3.10+" >&2
    exit 1
  fi
  echo "launch.sh: creating $venv from requirements.txt (missing or stale)" >&2
  [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -r requirements.txt >&2
  echo "$want" > "$stamp"
}

ensure_venv
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
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
