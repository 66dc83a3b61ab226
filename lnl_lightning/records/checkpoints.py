"""Checkpoints: read with a clear error, checked against the run taking them, written atomically.

A checkpoint is refused, naming its file, before any work when it is damaged (every record's
CRC is checked: ``torch.load`` does not check them and would load flipped bytes as weights),
holds no training state where a resume needs one, was written by another method, or holds
networks of other names or shapes than the config builds.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lnl_lightning.errors import ConfigError
from lnl_lightning.records.files import write_torch_atomic

RESUME_KEYS = ("loops", "optimizer_states", "epoch", "global_step")  # what Lightning resumes


def load_checkpoint(path: Path, key: str) -> dict:
    """Load a checkpoint (tensors and plain data only) or say clearly why not.

    ``key`` is the config key that named the file, for the message.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key} must be a checkpoint file, but {path} does not exist")
    damaged = f"{key}: {path} is not a readable checkpoint (truncated or corrupt?)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()  # reads every record, checks its CRC
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ConfigError(f"{damaged}: {err}") from err
    if bad_record is not None:
        raise ConfigError(f"{damaged}: its record {bad_record} fails its CRC check")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ConfigError(f"{damaged}: {err}") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{key}: {path} is not a Lightning checkpoint (no state_dict)")
    if not checkpoint["state_dict"]:
        raise ConfigError(f"{key}: {path} holds no weights (its state_dict is empty)")
    return upgrade_checkpoint(checkpoint)


OLD_TRAIN_MEANS = ("train_label_loss", "train_bias_loss", "train_acc")  # torchmetrics means
ENGINE_BUFFERS = ("train_sums", "first_bad", "steps_done")  # bookkeeping, not networks


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint written before the engine kept per-member epoch sums, in today's layout
    (in place; a current one is left as it is). Networks and optimizer states never changed.

    Old ordinary runs kept the epoch's running means as torchmetrics ``MeanMetric`` states
    (``train_label_loss.mean_value``, ``.weight``, ...), old packs their sums and their
    members' lambda and mu; both kept one first-non-finite batch per member, now one per loss
    term.
    """
    state = checkpoint["state_dict"]
    if f"{OLD_TRAIN_MEANS[0]}.mean_value" in state:
        label, bias, acc = (state[f"{name}.mean_value"] for name in OLD_TRAIN_MEANS)
        images = state[f"{OLD_TRAIN_MEANS[2]}.weight"]
        sums = torch.stack([label, bias, acc, images]).double().view(1, 4)
        for name in OLD_TRAIN_MEANS:
            for key in [k for k in state if k.startswith(f"{name}.")]:
                del state[key]
        state["train_sums"] = sums
    if "train_sums" not in state:
        return checkpoint  # not one of the engine's (e.g. weights saved by hand)
    for key in ("lambdas", "mus"):  # a pack's members' settings: rebuilt from their configs
        state.pop(key, None)
    members = len(state["train_sums"])
    first_bad = state.get("first_bad")
    if first_bad is None:
        state["first_bad"] = torch.full((members, 2), -1, dtype=torch.long)
    elif first_bad.dim() == 1:  # one per member: it stands for either loss term
        state["first_bad"] = first_bad.view(-1, 1).expand(-1, 2).clone()
    state.setdefault("steps_done", torch.zeros((), dtype=torch.long))
    return checkpoint


def check_fits(checkpoint: dict[str, Any], method: str, path: Path, key: str, resume: bool) -> None:
    """Refuse ``checkpoint`` (from ``path``, named by config key ``key``) for a ``method`` run
    unless that method wrote it. ``resume``: it continues a run (``ckpt_path`` of training), so
    it must hold Lightning's training state too; otherwise (evaluation) weights are enough."""
    if resume:
        missing = [k for k in RESUME_KEYS if k not in checkpoint]
        if missing:
            raise ConfigError(
                f"{key}: {path} holds weights only (no {', '.join(missing)}), so a run cannot "
                f"continue from it; start from its weights with model.init_from={path} instead"
            )
    written_by = (checkpoint.get("hyper_parameters") or {}).get("method")
    if written_by is not None and written_by != method:
        raise ConfigError(
            f"{key}: {path} was written by a model={written_by} run, but this config is "
            f"model={method}: give the config it was trained with (its run folder's "
            f"config_resolved.yaml), or warm-start f and g from it with model.init_from"
        )


def check_networks(
    checkpoint: dict[str, Any], model: torch.nn.Module, path: Path, key: str, what: str
) -> None:
    """Refuse ``checkpoint`` unless its weights have ``model``'s names and shapes; ``what``
    describes the config's networks, for the message."""
    saved, expected = (
        {k: v for k, v in state.items() if k not in ENGINE_BUFFERS}
        for state in (checkpoint["state_dict"], model.state_dict())
    )
    differences = state_dict_differences(saved, expected)
    if differences:
        raise ConfigError(
            f"{key}: {path} holds other networks than this config builds ({what}; "
            f"{differences}): give the experiment/model/net it was trained with"
        )


def state_dict_differences(
    saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], limit: int = 3
) -> str:
    """The first names missing, unexpected, or of another shape in ``saved``; "" if none."""

    def first(names: list[str]) -> str:
        more = f" and {len(names) - limit} more" if len(names) > limit else ""
        return ", ".join(names[:limit]) + more

    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    reshaped = [
        f"{k} {tuple(saved[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape) and v.numel() > 0
    ]  # an empty buffer is a table sized by the data when it is loaded (LfF's per-sample ones)
    parts = [
        f"{what}: {first(names)}"
        for what, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("other shapes", reshaped),
        )
        if names
    ]
    return "; ".join(parts)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through a temporary file beside the checkpoint renamed
    over it: a kill or a full disk mid-write leaves the previous ``last.ckpt``, never half of a
    new one. (Lightning's own writer stages in the system's temporary folder, then copies.)"""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        write_torch_atomic(Path(path), checkpoint)
