"""The command for an interactive shell in a sandbox: config `shell`, else bash, else sh."""

from __future__ import annotations


class ShellCommand(list):
    """An argv with another to try when the image lacks its program (run() reads `fallback`)."""

    def __init__(self, argv: list[str], fallback: list[str]) -> None:
        super().__init__(argv)
        self.fallback = fallback
        self.fell_back = False


def shell_command(shell: str | None, tty: bool = False) -> list[str]:
    """The command for an interactive shell: the configured one, else bash, else sh.

    On a terminal (the cd hook's case) the in-sandbox run script picks bash
    or sh (sandbox.execute.wrapped), at no extra cost since it runs anyway.
    Without a terminal a shell decides the same way.
    """
    if shell:
        return [shell, "-l"] if "/" not in shell and " " not in shell else ["sh", "-c", f"exec {shell}"]
    if tty:
        return ShellCommand(["bash", "-l"], ["sh", "-l"])
    return ["sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]
