"""Is data loading a bottleneck? Time Colored MNIST's set-up and one epoch of its loader alone.

Compare the loader's images/s with the training step's (benchmarks/step_throughput.py):
as long as the loader is many times faster, the step is what an epoch costs.

    python benchmarks/data_loading.py [--data-dir data] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from lnl_lightning.data.colored_mnist import ColoredMNISTDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    datamodule = ColoredMNISTDataModule(
        data_dir=args.data_dir, batch_size=args.batch_size, download=False
    )
    start = time.perf_counter()
    datamodule.setup()
    print(f"setup (load MNIST, colour 70k images): {time.perf_counter() - start:.1f} s")
    for epoch in range(2):
        images, start = 0, time.perf_counter()
        for batch in datamodule.train_dataloader():
            images += len(batch["label"])
        elapsed = time.perf_counter() - start
        print(
            f"epoch {epoch}: {images} images in {elapsed:.2f} s = {images / elapsed:.0f} images/s "
            f"(torch threads {torch.get_num_threads()})"
        )


if __name__ == "__main__":
    main()
