#!/usr/bin/env bash
# Model selection study (Colored MNIST, sigma^2 = 0.020, 3 epochs from scratch, official recipe):
# LNL over a lambda x mu grid, seed 0, each run validated both ways (data.val_colors=both), so
# every selection rule can be applied to the same runs; then the configurations the rules pick,
# and the paper's (0.01, 0.1), over seeds 0, 1, 2 beside the baseline. Resumable: one run per
# folder, a finished one (metrics.json) skipped, a stopped one resumed from its last.ckpt.
#
#   benchmarks/selection_study.sh OUT grid      # the grid (9 LNL runs) and the seed-0 baseline
#   benchmarks/selection_study.sh OUT seeds     # the grid's report (OUT/grid_report), then seeds
#                                               # 1, 2 of what its rules pick (picks.json), of
#                                               # the paper's setting and of the baseline
#   benchmarks/selection_study.sh OUT report    # OUT/report: report.md and plots of every run
#
# Stop it with SIGTERM: the running job saves its checkpoint, the next call resumes it.
set -euo pipefail
out=$(realpath -m "${1:?usage: benchmarks/selection_study.sh OUT grid|seeds|report}")
step=${2:?usage: benchmarks/selection_study.sh OUT grid|seeds|report}
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-data}
LAMBDAS=${LAMBDAS:-0.001 0.01 0.1}
MUS=${MUS:-0.03 0.1 0.3}
read -r -a extra <<< "${ARGS:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=(experiment=colored_mnist data.data_dir="$DATA_DIR" data.download=false
  data.color_var=0.02 data.val_colors=both trainer.max_epochs=3 task_name=selection_3ep
  trainer.enable_progress_bar=false callbacks=channels_last "${extra[@]}")
# callbacks=channels_last: the same algorithm in another memory layout (another summation order
# in the convolutions), about 1.3x faster on one CPU thread (results/paper_schedule_cpu)

child=
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM INT

job() {  # job FOLDER OVERRIDES...: one run, skipped when finished, resumed when stopped
  local dir=$out/runs/$1 resume=()
  shift
  if [ -f "$dir/metrics.json" ]; then
    return
  fi
  [ -f "$dir/checkpoints/last.ckpt" ] && resume=(ckpt_path=last)
  echo "${dir#"$out/runs/"} ${resume[*]:-}: $(date -u +%FT%TZ)"
  mkdir -p "$(dirname "$dir")"
  "$PY" -m lnl_lightning "${common[@]}" "$@" hydra.run.dir="$dir" "${resume[@]}" \
    >> "$dir.log" 2>&1 &
  child=$!
  wait "$child"
  child=
}

lnl() {  # lnl LAMBDA MU SEED
  job "lnl_l$1_m$2/seed$3" model=lnl model.lambda_="$1" model.mu="$2" seed="$3"
}

case $step in
  grid)
    job baseline/seed0 model=baseline seed=0
    for lambda in $LAMBDAS; do
      for mu in $MUS; do
        lnl "$lambda" "$mu" 0
      done
    done
    ;;
  seeds)
    "$PY" -m lnl_lightning.report "$out/runs" --out "$out/grid_report"  # and its picks.json
    picks=$("$PY" -c 'import json, sys
picks = json.load(open(sys.argv[1]))
chosen = {"%s:%s" % (p["lambda"], p["mu"]) for p in picks
          if p["method"] == "lnl" and p["tied"] == 1 and not p["rule"].startswith("test-set")}
print(" ".join(sorted(chosen)))' \
      "$out/grid_report/picks.json")
    for seed in 1 2; do
      job "baseline/seed$seed" model=baseline seed="$seed"
      for pick in $picks 0.01:0.1; do
        lnl "${pick%%:*}" "${pick##*:}" "$seed"
      done
    done
    ;;
  report)
    "$PY" -m lnl_lightning.report "$out/runs" --out "$out/report"
    ;;
  *)
    echo "usage: benchmarks/selection_study.sh OUT grid|seeds|report" >&2
    exit 2
    ;;
esac
