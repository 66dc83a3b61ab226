#!/usr/bin/env bash
# The GPU check: one command that measures what a lent GPU is for and writes it all into $OUT.
#
#   OUT=outputs/gpu_check DATA_DIR=data bash benchmarks/gpu_check.sh
#
# 1. bench.txt: `make bench` on the device: images/s per step variant, and of packs of
#    K = 1, 7, 21, 42 official LNL runs (CUDA graph); profile.txt: torch.profiler tables.
# 2. pair/: sigma^2 = 0.020, seed 0 at the paper's schedule with perf=fast: the baseline
#    PAIR_EPOCHS epochs, then LNL warm-started from its last checkpoint PAIR_EPOCHS epochs,
#    each cut at PAIR_S / 2 seconds.
# 3. determinism.txt: two identical short perf=fast runs (trainer.deterministic=true),
#    compared bit for bit (metrics and every tensor of the last checkpoint).
# 4. grid/: the Colored MNIST grid of `make reproduce PACK=1` (sigma^2 x seeds), baseline
#    then warm LNL, GRID_EPOCHS each, as packs, in the time left (BUDGET_S in all; skipped
#    with less than 100 s left).
# runs.tar.gz holds every run folder (no checkpoints); log.txt the machine, versions, timings
# and every step's output. Each step is cut at the time it may take, and a step that fails
# does not stop the next. On a machine without a GPU every step runs on the CPU, which is how
# it is tested (tiny settings through PAIR_ARGS, GRID_ARGS, BENCH_ARGS).
set -uo pipefail
OUT=${OUT:-outputs/gpu_check}
PY=${PY:-python3}
DATA_DIR=${DATA_DIR:-data}
BUDGET_S=${BUDGET_S:-540}
BENCH_STEPS=${BENCH_STEPS:-100}
BENCH_S=${BENCH_S:-110}
BENCH_ARGS=${BENCH_ARGS:-}
PAIR_EPOCHS=${PAIR_EPOCHS:-100}
PAIR_ARGS=${PAIR_ARGS:-}
PAIR_S=${PAIR_S:-360}
DET_BATCHES=${DET_BATCHES:-50}
GRID_EPOCHS=${GRID_EPOCHS:-10}
GRID_ARGS=${GRID_ARGS:-}
COLOR_VARS=${COLOR_VARS:-"0.020 0.025 0.030 0.035 0.040 0.045 0.050"}
SEEDS=${SEEDS:-"0 1 2"}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$OUT/work}
START=$(date +%s)
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1
left() { echo $((BUDGET_S - ($(date +%s) - START))); }
stamp() { echo "[$(($(date +%s) - START)) s] $*"; }
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 WANDB_MODE=disabled
QUIET="print_config=false trainer.enable_progress_bar=false"
csv() { echo "$*" | tr ' ' ','; }

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
timeout "$BENCH_S" $PY benchmarks/step_throughput.py --device "$DEVICE" --steps "$BENCH_STEPS" \
    --repeats 3 --profile "$OUT/profile.txt" $BENCH_ARGS > "$OUT/bench.txt" 2>&1
echo "bench exit $?" >> "$OUT/bench.txt"
cat "$OUT/bench.txt"

# ---------------------------------------------------------------- 2. the paper's pair
stamp "pair: sigma^2 0.020 seed 0, baseline ${PAIR_EPOCHS} epochs then warm LNL ${PAIR_EPOCHS}"
PAIR=$WORK/pair
mkdir -p "$PAIR"
pair_run() {  # $1 folder name, $2 seconds, then overrides
    local dir=$PAIR/$1 limit=$2
    shift 2
    timeout "$limit" $PY -m lnl_lightning experiment=colored_mnist perf=fast task_name=paper_pair \
        data.data_dir="$DATA_DIR" data.color_var=0.02 seed=0 trainer.max_epochs="$PAIR_EPOCHS" \
        $QUIET hydra.run.dir="$dir" "$@" $PAIR_ARGS > "$dir.log" 2>&1
    echo "exit $?" >> "$dir.log"
    tail -3 "$dir.log"
}
pair_run baseline $((PAIR_S / 2)) model=baseline
pair_run lnl_warm $((PAIR_S / 2)) model=lnl model.init_from="$PAIR/baseline/checkpoints/last.ckpt"
grep -h "CUDA graph" "$PAIR"/*.log | cut -c1-200 | head -6
$PY - "$PAIR" <<'EOF'
import json, sys
from pathlib import Path
for run in ("baseline", "lnl_warm"):
    path = Path(sys.argv[1]) / run / "metrics.json"
    if not path.is_file():
        print(f"{run}: did not finish")
        continue
    m = json.loads(path.read_text())
    keys = ("test/acc", "test/acc_conflicting", "test/bias_acc", "val/acc")
    print(f"{run}: {m['epochs']} epochs, {m['train_images_per_s']} images/s, "
          f"{m['wall_time_s']} s; " + ", ".join(f"{k} {m['metrics'].get(k, float('nan')):.4f}" for k in keys))
EOF

# ---------------------------------------------------------------- 3. determinism
stamp "determinism: two identical perf=fast runs, deterministic=true, at the same time"
mkdir -p "$WORK/det"
pids=()
for copy in a b; do
    timeout 60 $PY -m lnl_lightning experiment=colored_mnist perf=fast data.data_dir="$DATA_DIR" \
        $QUIET trainer.max_epochs=1 trainer.limit_train_batches="$DET_BATCHES" \
        trainer.limit_val_batches=10 trainer.deterministic=true hydra.run.dir="$WORK/det/$copy" \
        > "$WORK/det/$copy.log" 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"  # not a bare wait: that would also wait for the log's tee
$PY - "$WORK/det" > "$OUT/determinism.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
import torch
a, b = Path(sys.argv[1]) / "a", Path(sys.argv[1]) / "b"
if not ((a / "metrics.json").is_file() and (b / "metrics.json").is_file()):
    print("a run did not finish:", *(a.parent / "a.log").read_text().splitlines()[-6:], sep="\n  ")
else:
    ma, mb = (json.loads((p / "metrics.json").read_text())["metrics"] for p in (a, b))
    sa, sb = (torch.load(p / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"] for p in (a, b))
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    print(f"perf=fast deterministic=true: metrics identical: {ma == mb}; tensors identical: "
          f"{len(sa) - len(differ)}/{len(sa)}")
EOF
cat "$OUT/determinism.txt"

# ---------------------------------------------------------------- 4. the grid, packed
GRID=$WORK/grid
grid_phase() {  # $1 phase, $2 seconds, then overrides
    local phase=$1 limit=$2
    shift 2
    timeout "$limit" $PY -m lnl_lightning -m sweep=reproduce hydra/launcher=packed \
        perf.cuda_graph=true data.data_dir="$DATA_DIR" data.color_var="$(csv $COLOR_VARS)" \
        seed="$(csv $SEEDS)" 'hydra.sweep.subdir=cv${data.color_var}_seed${seed}' \
        hydra.sweep.dir="$GRID/$phase" trainer.max_epochs="$GRID_EPOCHS" $QUIET "$@" $GRID_ARGS \
        > "$GRID/$phase.log" 2>&1
    echo "exit $?" >> "$GRID/$phase.log"
    tail -2 "$GRID/$phase.log"
}
mkdir -p "$GRID"
if [ "$(left)" -lt 100 ]; then
    stamp "grid: skipped, $(left) s left"
    GRID_EPOCHS=0
fi
half=$(( ($(left) - 30) / 2 ))
stamp "grid: ${GRID_EPOCHS} epochs per phase as packs, sigma^2 {${COLOR_VARS}} x seeds {${SEEDS}}, ${half} s per phase"
grid_start=$(date +%s)
if [ "$GRID_EPOCHS" -gt 0 ]; then
    grid_phase baseline "$half" model=baseline
    grid_phase lnl_warm "$(( $(left) - 25 ))" model=lnl \
        "model.init_from=$GRID/baseline/cv\${data.color_var}_seed\${seed}/checkpoints/last.ckpt"
fi
grid_s=$(($(date +%s) - grid_start))
stamp "grid done or stopped after ${grid_s} s"
$PY - "$GRID" "$grid_s" <<'EOF'
import json, sys
from pathlib import Path
grid, wall = Path(sys.argv[1]), float(sys.argv[2])
runs = [json.loads(p.read_text()) for p in grid.rglob("metrics.json")]
print(f"finished runs: {len(runs)} in {wall:.0f} s (both phases, evaluation and start-up included)")
packs = {r["pack"]["folder"]: r["pack"] for r in runs if r.get("pack")}
for folder, pack in sorted(packs.items()):
    print(f"  pack {Path(folder).parent.parent.name}: {pack['members']} members, "
          f"{pack['train_images_per_s']} training images/s in all")
EOF
$PY -m lnl_lightning.report "$GRID" --out "$GRID" > /dev/null 2>&1 && cat "$GRID/report.md"
$PY -m lnl_lightning.report "$PAIR" --out "$PAIR" > /dev/null 2>&1
(cd "$WORK" && tar czf "$OUT/runs.tar.gz" --exclude='*.ckpt' --exclude='samples_*.png' \
    --exclude='group_acc_*.png' pair det grid)
rm -rf "$WORK"
stamp "done"
