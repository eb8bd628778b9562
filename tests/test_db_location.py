"""A --db (or $QUEUECTL_DB) whose directory does not exist is refused, not created;
only the default location is made (#12). SQLite only: PostgreSQL has no location."""

from conftest import env_for
from support import error_line

# --- 5. a --db whose directory does not exist -------------------------------------------------------


def test_a_missing_directory_is_refused_not_created(scli, tmp_path):
    missing = tmp_path / "typo" / "deeper"
    for args, env in ((["--db", missing / "q.db", "list"], None), (["status", "--db", missing / "q.db"], None),
                      (["enqueue", "true"], env_for(str(missing / "q.db")))):
        line = error_line(scli(*args, env=env), 1, f"database directory {missing} does not exist")
        assert "mkdir -p" in line
    assert not (tmp_path / "typo").exists()


def test_a_location_that_is_not_a_directory(scli, tmp_path):
    (tmp_path / "plain").write_text("a file\n")
    error_line(scli("--db", tmp_path / "plain" / "q.db", "list"), 1, f"{tmp_path / 'plain'} is not a directory")
    error_line(scli("--db", tmp_path / "plain" / "sub" / "q.db", "list"), 1, f"{tmp_path / 'plain'} is not a directory")


def test_the_default_location_is_still_created(scli, tmp_path):
    env = env_for("", XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("QUEUECTL_DB")
    scli.ok("enqueue", "true", env=env)
    assert (tmp_path / "xdg" / "queuectl" / "queue.db").is_file()


def test_a_read_only_directory_says_so(tmp_path):
    from test_storage_faults import ReadOnly

    folder = tmp_path / "ro"
    folder.mkdir()
    ro = ReadOnly(folder / "queue.db", folder, tmp_path)
    try:
        line = error_line(ro("enqueue", "true"), 1, f"cannot create database {folder / 'queue.db'}")
        assert "Read-only file system" in line or "Permission denied" in line, line
    finally:
        ro.restore()
    assert list(folder.iterdir()) == []
