import pytest

from lnl_lightning.files import write_atomic, write_text_atomic


def test_a_write_killed_halfway_leaves_the_old_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_text_atomic(path, "old")

    def dies_halfway(tmp):
        tmp.write_text("half of the new")
        raise KeyboardInterrupt  # the process is stopped mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, dies_halfway)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
