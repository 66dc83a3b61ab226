#!/usr/bin/env bash
# The paper's Colored MNIST schedule for one (sigma^2, seed), resumable, on the default data:
# the baseline for EPOCHS epochs, then LNL warm-started from its last checkpoint (lr 0.001, as
# the official train.sh) for LNL_EPOCHS epochs; all 60,000 training images train
# (data.val_fraction=0, the official protocol), so the reported weights are the last epoch's.
#
#   benchmarks/paper_schedule.sh RUN_DIR            # start, or resume what RUN_DIR holds
#   COLOR_VAR=0.030 SEED=1 EPOCHS=100 LNL_EPOCHS=100 OMP_NUM_THREADS=1 benchmarks/paper_schedule.sh DIR
#   PHASES=baseline ARGS="callbacks=channels_last" benchmarks/paper_schedule.sh DIR
#
# PHASES picks the phases to run, in order (default: baseline lnl_warm); ARGS adds overrides to
# both (same recipe; callbacks=channels_last only changes the memory layout, so the summation
# order inside the convolutions, and on this CPU runs the official step about 1.3x faster).
#
# Stop it with SIGTERM (kill -TERM <pid of this script>): the running phase saves
# RUN_DIR/<phase>/checkpoints/last.ckpt and the next call resumes from it. A phase whose
# metrics.json exists is done and is skipped. RESUME_FROM=<a last.ckpt> resumes a phase whose
# folder was lost from a checkpoint kept elsewhere (e.g. one committed beside its records).
set -euo pipefail
run_dir=$(realpath -m "${1:?usage: benchmarks/paper_schedule.sh RUN_DIR}")
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COLOR_VAR=${COLOR_VAR:-0.020}
SEED=${SEED:-0}
EPOCHS=${EPOCHS:-100}
LNL_EPOCHS=${LNL_EPOCHS:-100}
DATA_DIR=${DATA_DIR:-data}
PHASES=${PHASES:-baseline lnl_warm}
read -r -a extra <<< "${ARGS:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=(data.data_dir="$DATA_DIR" data.color_var="$COLOR_VAR" seed="$SEED" data.val_fraction=0
  task_name=paper_schedule print_config=false "${extra[@]}")

child=
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM INT

phase() {  # phase NAME EPOCHS OVERRIDES...
  local name=$1 epochs=$2 dir=$run_dir/$1 resume=()
  shift 2
  if [ -f "$dir/metrics.json" ]; then
    echo "$name: done ($dir/metrics.json)"
    return
  fi
  if [ -f "$dir/checkpoints/last.ckpt" ]; then
    resume=(ckpt_path=last)
  elif [ -n "${RESUME_FROM:-}" ] && [ "$(basename "$(dirname "$(dirname "$RESUME_FROM")")")" = "$name" ]; then
    resume=(ckpt_path="$(realpath "$RESUME_FROM")")
  fi
  echo "$name: $epochs epochs in $dir ${resume[*]:-(from the start)}, $(date -u +%FT%TZ)"
  "$PY" -m lnl_lightning "$@" "${common[@]}" trainer.max_epochs="$epochs" \
    hydra.run.dir="$dir" "${resume[@]}" >> "$run_dir/$name.log" 2>&1 &
  child=$!
  wait "$child"
  child=
  echo "$name: finished, $(date -u +%FT%TZ)"
}

mkdir -p "$run_dir"
for name in $PHASES; do
  case $name in
    baseline) phase baseline "$EPOCHS" model=baseline ;;
    lnl_warm)
      if [ ! -f "$run_dir/baseline/metrics.json" ]; then
        echo "lnl_warm: needs the finished baseline ($run_dir/baseline/metrics.json)" >&2
        exit 2
      fi
      phase lnl_warm "$LNL_EPOCHS" model=lnl model.init_from="$run_dir/baseline/checkpoints/last.ckpt" ;;
    *) echo "PHASES: '$name' is not a phase (baseline, lnl_warm)" >&2; exit 2 ;;
  esac
done
