"""agentsh.base.safefs: files in directories a sandbox can write, never through a link it planted."""

import os
import stat

import pytest

from agentsh.base import safefs


@pytest.fixture
def tree(tmp_path):
    """A directory the "sandbox" writes, and a secret outside it."""
    (tmp_path / "box" / "a" / "b").mkdir(parents=True)
    (tmp_path / "box" / "a" / "file").write_bytes(b"data")
    (tmp_path / "secret").write_bytes(b"host secret")
    return tmp_path


def opened(path, rel=""):
    fd = safefs.open_dir(str(path), rel)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def test_open_dir_walks_real_directories(tree):
    assert opened(tree / "box", "a/b") == os.stat(tree / "box" / "a" / "b").st_ino
    assert opened(tree / "box", "a//b/") == os.stat(tree / "box" / "a" / "b").st_ino


@pytest.mark.parametrize("rel", ["..", "a/..", "a/../..", ".", "a/./b"])
def test_open_dir_refuses_dot_and_dot_dot(tree, rel):
    with pytest.raises(OSError, match="'.' or '..'"):
        safefs.open_dir(str(tree / "box"), rel)


def test_open_dir_refuses_a_symlink_on_the_way_or_at_the_start(tree):
    (tree / "box" / "a" / "out").symlink_to(tree)
    with pytest.raises(OSError):
        safefs.open_dir(str(tree / "box"), "a/out")
    (tree / "link").symlink_to(tree / "box")
    with pytest.raises(OSError):
        safefs.open_dir(str(tree / "link"))


def test_open_dir_refuses_a_file(tree):
    with pytest.raises(NotADirectoryError):
        safefs.open_dir(str(tree / "box"), "a/file")


def test_open_dir_create_makes_missing_components_with_the_mode(tree):
    fd = safefs.open_dir(str(tree / "box"), "new/deeper", create=True, mode=0o700)
    os.close(fd)
    assert stat.S_IMODE(os.stat(tree / "box" / "new" / "deeper").st_mode) == 0o700


def test_open_dir_create_does_not_follow_a_planted_link(tree):
    (tree / "box" / "new").symlink_to(tree)
    with pytest.raises(OSError):
        safefs.open_dir(str(tree / "box"), "new/deeper", create=True)
    assert not (tree / "deeper").exists()


@pytest.fixture
def box(tree):
    fd = safefs.open_dir(str(tree / "box"), "a")
    yield fd
    os.close(fd)


def test_read_a_regular_file_and_a_missing_one(box):
    assert safefs.read(box, "file") == b"data"
    assert safefs.read(box, "missing") is None


def test_read_refuses_a_symlink(tree, box):
    (tree / "box" / "a" / "link").symlink_to(tree / "secret")
    with pytest.raises(OSError):
        safefs.read(box, "link")


def test_read_refuses_a_fifo_without_blocking_and_a_directory(tree, box):
    os.mkfifo(tree / "box" / "a" / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        safefs.read(box, "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        safefs.read(box, "b")


def test_read_refuses_more_than_the_limit(tree, box):
    (tree / "box" / "a" / "big").write_bytes(b"x" * 101)
    (tree / "box" / "a" / "exact").write_bytes(b"x" * 100)
    with pytest.raises(OSError, match="larger than 100 bytes"):
        safefs.read(box, "big", limit=100)
    assert safefs.read(box, "exact", limit=100) == b"x" * 100


def test_copy_out_makes_a_new_private_file(tree, box):
    target = tree / "copy"
    safefs.copy_out(box, "file", str(target), 100)
    assert target.read_bytes() == b"data" and stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_copy_out_never_writes_through_an_existing_target(tree, box):
    (tree / "copy").symlink_to(tree / "secret")
    with pytest.raises(FileExistsError):
        safefs.copy_out(box, "file", str(tree / "copy"), 100)
    assert (tree / "secret").read_bytes() == b"host secret"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "dir", "too big"])
def test_copy_out_refuses_what_is_not_a_small_regular_file(tree, box, kind):
    src = tree / "box" / "a" / "src"
    if kind == "symlink":
        src.symlink_to(tree / "secret")
    elif kind == "fifo":
        os.mkfifo(src)
    elif kind == "dir":
        src.mkdir()
    else:
        src.write_bytes(b"x" * 101)
    with pytest.raises(OSError):
        safefs.copy_out(box, "src", str(tree / "copy"), 100)
    assert not os.path.lexists(tree / "copy")


def test_write_replaces_a_planted_symlink_instead_of_following_it(tree, box):
    (tree / "box" / "a" / "list").symlink_to(tree / "secret")
    safefs.write(box, "list", b"mine\n")
    assert (tree / "secret").read_bytes() == b"host secret"
    assert not os.path.islink(tree / "box" / "a" / "list")
    assert (tree / "box" / "a" / "list").read_bytes() == b"mine\n"


def test_write_replaces_a_planted_temporary_link_too(tree, box):
    (tree / "box" / "a" / f".list.agentsh-tmp-{os.getpid()}").symlink_to(tree / "secret")
    safefs.write(box, "list", b"mine\n", mode=0o600)
    assert (tree / "secret").read_bytes() == b"host secret"
    assert stat.S_IMODE(os.stat(tree / "box" / "a" / "list").st_mode) == 0o600
    assert sorted(os.listdir(tree / "box" / "a")) == ["b", "file", "list"]


def test_unlink_removes_a_link_itself_and_tolerates_none(tree, box):
    (tree / "box" / "a" / "link").symlink_to(tree / "secret")
    safefs.unlink(box, "link")
    safefs.unlink(box, "link")
    assert not os.path.lexists(tree / "box" / "a" / "link") and (tree / "secret").exists()


def test_read_project_file_refuses_links_and_special_files(tree):
    (tree / "link").symlink_to(tree / "secret")
    os.mkfifo(tree / "fifo")
    assert safefs.read_project_file(str(tree / "secret")) == b"host secret"
    with pytest.raises(safefs.NotRegular, match="symlink"):
        safefs.read_project_file(str(tree / "link"))
    with pytest.raises(safefs.NotRegular):
        safefs.read_project_file(str(tree / "fifo"))
    with pytest.raises(safefs.ConfigError, match="larger than 4 bytes"):
        safefs.read_project_file(str(tree / "secret"), limit=4)


def test_read_file_follows_a_final_link_only_into_a_regular_file(tree):
    (tree / "link").symlink_to(tree / "secret")
    os.mkfifo(tree / "fifo")
    (tree / "to-fifo").symlink_to(tree / "fifo")
    assert safefs.read_file(str(tree / "link")) == b"host secret"
    with pytest.raises(safefs.NotRegular):
        safefs.read_file(str(tree / "to-fifo"))
