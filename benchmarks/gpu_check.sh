#!/usr/bin/env bash
# The GPU check: one command that measures what a lent GPU is for and writes it all into $OUT.
#
#   OUT=outputs/gpu_check DATA_DIR=../shared/data bash benchmarks/gpu_check.sh
#
# 1. bench.txt: `make bench` on the device (images/s and ratios per step variant) and
#    profile.txt: torch.profiler tables of the official LNL step in Lightning's loop.
# 2. determinism.txt: two identical short runs, trainer.deterministic=true and =warn, compared
#    bit for bit (metrics and every tensor of the last checkpoint).
# 3. runs.tar.gz: the Colored MNIST grid of `make reproduce` (baseline GRID_EPOCHS, LNL
#    warm-started from it GRID_EPOCHS, LNL from scratch GRID_EPOCHS) over COLOR_VARS x SEEDS,
#    PARALLEL runs at a time, stopped when BUDGET_S runs out; with the report of what finished.
# log.txt: the machine, versions, timings and every step's output.
# On a machine without a GPU every step still runs (on the CPU), which is how it is tested.
set -uo pipefail
OUT=${OUT:-outputs/gpu_check}
PY=${PY:-python3}
DATA_DIR=${DATA_DIR:-data}
BUDGET_S=${BUDGET_S:-480}
BENCH_STEPS=${BENCH_STEPS:-200}
DET_BATCHES=${DET_BATCHES:-100}
GRID_EPOCHS=${GRID_EPOCHS:-2}
COLOR_VARS=${COLOR_VARS:-"0.020 0.025 0.030 0.035 0.040 0.045 0.050"}
SEEDS=${SEEDS:-"0 1 2"}
PARALLEL=${PARALLEL:-14}
GRID_ARGS=${GRID_ARGS:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$OUT/work}
START=$(date +%s)
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
stamp() { echo "[$(($(date +%s) - START)) s] $*"; }
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
# no progress bar or config print: nothing to look at, and fewer host cycles per step
QUIET="print_config=false callbacks.rich_progress_bar=null trainer.enable_progress_bar=false"

stamp "gpu check: budget ${BUDGET_S} s, data ${DATA_DIR}"
nvidia-smi 2>/dev/null || echo "no nvidia-smi"
$PY - <<'EOF'
import torch, pytorch_lightning, torchmetrics, hydra, omegaconf
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("lightning", pytorch_lightning.__version__, "torchmetrics", torchmetrics.__version__,
      "hydra", hydra.__version__, "omegaconf", omegaconf.__version__)
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
EOF

# ---------------------------------------------------------------- 1. bench and profile
stamp "bench"
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
$PY benchmarks/step_throughput.py --device "$DEVICE" --steps "$BENCH_STEPS" --repeats 3 \
    --profile "$OUT/profile.txt" > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"

# ---------------------------------------------------------------- 2. determinism
stamp "determinism: two identical runs per setting, at the same time"
run_short() {  # $1 folder, $2 deterministic setting
    $PY -m lnl_lightning experiment=colored_mnist data.data_dir="$DATA_DIR" $QUIET \
        trainer.max_epochs=1 trainer.limit_train_batches="$DET_BATCHES" trainer.limit_val_batches=10 \
        trainer.deterministic="$2" hydra.run.dir="$1" > "$1.log" 2>&1
    echo "exit $?" >> "$1.log"
}
mkdir -p "$WORK/det"
pids=()
for setting in true warn; do
    for copy in a b; do run_short "$WORK/det/${setting}_$copy" "$setting" & pids+=($!); done
done
wait "${pids[@]}"  # not a bare wait: that would also wait for the log's tee
$PY - "$WORK/det" > "$OUT/determinism.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
import torch
root = Path(sys.argv[1])
for setting in ("true", "warn"):
    a, b = root / f"{setting}_a", root / f"{setting}_b"
    if not ((a / "metrics.json").is_file() and (b / "metrics.json").is_file()):
        tail = (a.parent / f"{a.name}.log").read_text().splitlines()[-6:]
        print(f"deterministic={setting}: a run did not finish:", *tail, sep="\n  ")
        continue
    ma, mb = (json.loads((p / "metrics.json").read_text())["metrics"] for p in (a, b))
    sa, sb = (torch.load(p / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"] for p in (a, b))
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    worst = max((float((sa[k].double() - sb[k].double()).abs().max()) for k in differ), default=0.0)
    print(f"deterministic={setting}: metrics identical: {ma == mb}; tensors identical: "
          f"{len(sa) - len(differ)}/{len(sa)}; largest difference {worst:.3g}")
    print(f"  test/acc {ma.get('test/acc')} vs {mb.get('test/acc')}")
EOF
cat "$OUT/determinism.txt"

# ---------------------------------------------------------------- 3. the grid
stamp "grid: ${GRID_EPOCHS} epochs per phase, sigma^2 {${COLOR_VARS}} x seeds {${SEEDS}}, ${PARALLEL} at a time"
GRID=$WORK/grid
mkdir -p "$GRID"
train() {  # $1 phase folder, $2 sigma^2, $3 seed, then overrides
    local dir=$GRID/$1/cv$2_seed$3
    shift 3
    mkdir -p "$(dirname "$dir")"
    $PY -m lnl_lightning task_name=reproduce_colored_mnist data.data_dir="$DATA_DIR" $QUIET \
        data.color_var="$(basename "$dir" | sed -E 's/cv(.*)_seed.*/\1/')" \
        seed="${dir##*_seed}" hydra.run.dir="$dir" trainer.max_epochs="$GRID_EPOCHS" "$@" $GRID_ARGS \
        > "$dir.log" 2>&1
}
job() {  # "chain cv seed": baseline then warm LNL; "scratch cv seed": LNL from scratch
    set -- $1
    if [ "$1" = chain ]; then
        train baseline "$2" "$3" model=baseline &&
            train lnl_warm "$2" "$3" model=lnl \
                model.init_from="$GRID/baseline/cv$2_seed$3/checkpoints/last.ckpt"
    else
        train lnl_scratch "$2" "$3" model=lnl
    fi
}
export -f train job
export GRID PY DATA_DIR QUIET GRID_EPOCHS GRID_ARGS
for seed in $SEEDS; do for cv in $COLOR_VARS; do
    echo "chain $cv $seed"; echo "scratch $cv $seed"
done; done > "$WORK/jobs.txt"
grid_start=$(date +%s)
timeout "$(( $(left) - 40 ))" xargs -P "$PARALLEL" -I{} bash -c 'job "{}"' < "$WORK/jobs.txt"
grid_s=$(($(date +%s) - grid_start))
pkill -TERM -f "lnl_lightning task_name=reproduce_colored_mnist" && sleep 10  # out of time: stop
stamp "grid stopped or done after ${grid_s} s"
$PY - "$GRID" "$grid_s" <<'EOF'
import json, sys
from pathlib import Path
from omegaconf import OmegaConf
grid, wall = Path(sys.argv[1]), float(sys.argv[2])
runs = [(json.loads(p.read_text()), OmegaConf.load(p.parent / "config_resolved.yaml"))
        for p in grid.rglob("metrics.json")]
print(f"finished runs: {len(runs)} in {wall:.0f} s")
if runs:
    # Training images only (validation and test passes not counted): epochs x training split.
    images = sum(r["epochs"] * round(60000 * (1 - c.data.val_fraction)) for r, c in runs)
    rates = [r["train_images_per_s"] for r, _ in runs if r.get("train_images_per_s")]
    print(f"aggregate: {images / wall:.0f} training images/s over the grid's wall time")
    print(f"per run, while sharing the device: {min(rates):.0f} to {max(rates):.0f} images/s")
EOF
$PY -m lnl_lightning.report "$GRID" --out "$GRID" > /dev/null 2>&1 && cat "$GRID/report.md"
(cd "$WORK" && tar czf "$OUT/runs.tar.gz" --exclude='*.ckpt' --exclude='samples_*.png' --exclude='group_acc_*.png' grid det)
rm -rf "$WORK"
stamp "done"
