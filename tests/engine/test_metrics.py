import pytest
import torch

from lnl_lightning.engine.figures import save_group_matrix
from lnl_lightning.engine.metrics import GroupAccuracy


def test_group_accuracy_summaries():
    aligned = torch.eye(2, 3, dtype=torch.bool)  # cells (0,0) and (1,1) are bias-aligned
    metric = GroupAccuracy(aligned)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 0, 0])
    metric.update(preds, labels, groups)
    out = metric.compute()
    # cells: (0,0) 3/4, (1,1) 1/2, (1,2) 0/1, (0,2) 1/1
    assert out["acc"].item() == pytest.approx(5 / 8)
    assert out["acc_aligned"].item() == pytest.approx(4 / 6)
    assert out["acc_conflicting"].item() == pytest.approx(1 / 2)
    assert out["acc_unbiased"].item() == pytest.approx((0.75 + 0.5 + 0 + 1) / 4)
    cells = metric.cell_accuracy()
    assert torch.isnan(cells[0, 1]) and cells[0, 0] == 0.75


def test_group_accuracy_accepts_logits_and_omits_empty_summaries():
    metric = GroupAccuracy(torch.eye(3, dtype=torch.bool))
    logits = torch.tensor([[5.0, 0, 0], [0, 0, 5.0]])
    metric.update(logits, torch.tensor([0, 1]), torch.tensor([0, 1]))
    out = metric.compute()
    assert out["acc"].item() == 0.5 and "acc_conflicting" not in out


def test_group_matrix_files(tmp_path):
    correct = torch.tensor([[3, 0], [1, 2]])
    total = torch.tensor([[4, 0], [2, 2]])
    csv_path, png_path = save_group_matrix(correct, total, tmp_path, "m", ("a", "b"), ("x", "y"))
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "label,bias_group,accuracy,count"
    assert rows[1] == "a,x,0.750000,4" and rows[2] == "a,y,,0"
    assert png_path.stat().st_size > 1000


def test_worst_group_accuracy_against_a_hand_count():
    from lnl_lightning.engine.metrics import WORST_GROUP_FLOOR, group_summary

    assert WORST_GROUP_FLOOR == 10
    # cells: (0,0) 18/20 = .9, (0,1) 0/5 (under the floor), (1,0) 6/12 = .5, (1,1) 27/30 = .9
    correct = torch.tensor([[18, 0], [6, 27]])
    total = torch.tensor([[20, 5], [12, 30]])
    aligned = torch.eye(2, dtype=torch.bool)
    summary = group_summary(correct, total, aligned, ~aligned)
    assert summary["acc_worst_group"].item() == pytest.approx(0.5)
    assert summary["acc_unbiased"].item() == pytest.approx((0.9 + 0 + 0.5 + 0.9) / 4)
    few = group_summary(correct, torch.tensor([[9, 5], [9, 9]]), aligned, ~aligned)
    assert "acc_worst_group" not in few  # no cell holds enough images to say
