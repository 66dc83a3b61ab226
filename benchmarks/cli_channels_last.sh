#!/usr/bin/env bash
# Images/s of the CLI's own training loop (the official recipe, Colored MNIST, batch 128) with and
# without callbacks=channels_last, one thread per process, the two variants run side by side
# (as two long runs share this machine) and swapped between repeats.
#
#   benchmarks/cli_channels_last.sh OUT_DIR [MODEL ...]      # default models: baseline lnl
#   BATCHES=150 REPEATS=2 DATA_DIR=../shared/data benchmarks/cli_channels_last.sh /tmp/cl
#
# Prints one line per run: model, variant, repeat, train/images_per_s (metrics.json), then the
# median per model and variant. Same algorithm either way; channels-last changes the memory
# layout, hence the summation order inside the convolutions.
set -euo pipefail
out=$(realpath -m "${1:?usage: benchmarks/cli_channels_last.sh OUT_DIR [MODEL ...]}")
shift
models=("$@")
[ $# -eq 0 ] && models=(baseline lnl)
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BATCHES=${BATCHES:-150}
REPEATS=${REPEATS:-2}
DATA_DIR=${DATA_DIR:-data}
export OMP_NUM_THREADS=1
mkdir -p "$out"

one() {  # one MODEL VARIANT REPEAT
  local dir=$out/$1_$2_$3 cb=default
  [ "$2" = channels_last ] && cb=channels_last
  "$PY" -m lnl_lightning model="$1" callbacks="$cb" data.data_dir="$DATA_DIR" data.color_var=0.020 \
    data.val_fraction=0 trainer.max_epochs=1 trainer.limit_train_batches="$BATCHES" \
    trainer.limit_test_batches=1 trainer.enable_progress_bar=false callbacks.rich_progress_bar=null \
    print_config=false logger=csv hydra.run.dir="$dir" > "$dir.log" 2>&1
}

for model in "${models[@]}"; do
  for r in $(seq 1 "$REPEATS"); do
    one "$model" default "$r" &
    a=$!
    one "$model" channels_last "$r" &
    b=$!
    wait "$a" "$b"
  done
done

"$PY" - "$out" <<'PY'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path

rates = defaultdict(list)
for m in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    variant = "channels_last" if "_channels_last_" in m.parent.name else "default"
    model, repeat = m.parent.name.split(f"_{variant}_")
    rate = json.loads(m.read_text())["train_images_per_s"]
    rates[model, variant].append(rate)
    print(f"{model:10s} {variant:14s} repeat {repeat}  {rate:7.1f} images/s")
for model in sorted({k[0] for k in rates}):
    base = statistics.median(rates[model, "default"])
    cl = statistics.median(rates[model, "channels_last"])
    print(f"{model:10s} median default {base:7.1f}  channels_last {cl:7.1f}  ratio {cl / base:.2f}")
PY
