#!/usr/bin/env bash
# Every experiment, one after another (one training process at a time), then the summary.
#   nohup experiments/run_all.sh [EXPERIMENT ...] > workdirs/experiments/run_all.log 2>&1 &
# Finished runs are skipped, so rerunning resumes. Logs: workdirs/experiments/NAME.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p workdirs/experiments
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(headline posemb classifier_lr patch_size transfer resolution
                                    precision precision_mu4)
for name in "${names[@]}"; do
  case "$name" in  # a results folder made by a script's flags, else the script's own name
    precision_mu4) job=(experiments.precision --variant=mu/4 --seeds=2) ;;
    *) job=("experiments.$name") ;;
  esac
  echo "$(date '+%F %T') start $name"
  ./launch.sh python -m "${job[@]}" > "workdirs/experiments/$name.log" 2>&1 \
    && echo "$(date '+%F %T') done $name" || echo "$(date '+%F %T') FAILED $name (see workdirs/experiments/$name.log)"
done
./launch.sh python -m experiments.report --summary
