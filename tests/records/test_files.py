import pytest

from lnl_lightning.records.files import write_atomic, write_text_atomic


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


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask_as_open_does(tmp_path, umask):
    import os

    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "metrics.json", "{}")
        (tmp_path / "plain.txt").write_text("{}")
    finally:
        os.umask(old)
    mode = (tmp_path / "metrics.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_run_folder_is_locked_while_a_run_writes_there(tmp_path):
    import os

    from lnl_lightning.errors import ConfigError
    from lnl_lightning.records.files import run_lock

    with run_lock(tmp_path / "run"):
        assert (tmp_path / "run" / ".lock").read_text() == f"pid {os.getpid()}\n"
        busy = rf"run is in use by another run \(pid {os.getpid()}"
        with pytest.raises(ConfigError, match=busy), run_lock(tmp_path / "run"):
            pass
    with run_lock(tmp_path / "run"):  # released: the next run takes it
        pass
