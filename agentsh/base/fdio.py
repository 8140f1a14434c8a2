"""Writing to a file descriptor without Python's buffered I/O (the exec paths pass bytes through)."""

import os


def write_all(fd: int, data: bytes) -> None:
    """Write all of data to fd; a reader that went away (a closed pipe) ends it quietly."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BrokenPipeError:
            return
