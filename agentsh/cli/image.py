"""ab-image: build the default sandbox image, list agentsh images."""

import sys
import time

from agentsh.base.state import Store
from agentsh.cli import options
from agentsh.cli.common import notice, print_json, run
from agentsh.cli.options import FLAG, IMAGE, OFF, Command, Option
from agentsh.host.engine import Engine
from agentsh.policy import config

EXAMPLES = [
    "ab-image build                   # localhost/agentsh:latest on debian:bookworm-slim",
    "ab-image build --bootstrap       # make the Debian base here (mmdebstrap: no root needed)",
    "ab-image build --no-agents --tag localhost/agentsh:slim",
    "ab-image build --refresh         # new base, new packages, newest agent CLIs",
    "ab-image ls",
    "ab-image ls --json | jq -r '.[].name'",
]
BUILD_EXAMPLES = EXAMPLES[:4] + [
    "ab-image build --mirror http://ftp.de.debian.org/debian --bootstrap",
    "ab-image build -q --json | jq -r .id",
]
LS_EXAMPLES = EXAMPLES[4:]
COLUMNS = ("name", "id", "created", "size")
TAIL_LINES = 15
COMMAND = Command(
    "ab-image",
    "Build the default sandbox image (localhost/agentsh:latest) or list agentsh images.",
    EXAMPLES,
    sub_dest="command", sub_metavar="COMMAND",
    subcommands=(
        Command(
            "ab-image build",
            "Build the default sandbox image from agentsh's Containerfile: Debian bookworm with git, ripgrep, "
            "jq, python3, Node 22 and the agent CLIs (claude, codex, gemini, opencode). The base is "
            "docker.io/library/debian:bookworm-slim; when it cannot be pulled, a Debian base is made here (as with "
            "--bootstrap). The host's CA bundle (config 'ca_bundle') is trusted during the "
            "build. Progress goes to stderr; stdout gets only the image name (or JSON).",
            BUILD_EXAMPLES,
            help="build the default image",
            options=(
                Option("--tag", default=None, metavar="IMG", help="image name (default: localhost/agentsh:latest)",
                       value=IMAGE),
                Option("--base", metavar="IMG", group="base", value=IMAGE,
                       help="base image: a Debian bookworm (default: docker.io/library/debian:bookworm-slim, "
                            "pulled if missing)"),
                Option("--bootstrap", kind=FLAG, group="base",
                       help="make the base here as localhost/agentsh-base:bookworm, reused later: with mmdebstrap "
                            "(an ordinary user: --mode=unshare, no root), else debootstrap (root)"),
                Option("--mirror", metavar="URL",
                       help="Debian mirror for the base and apt (default: http://deb.debian.org/debian)"),
                Option("--no-agents", dest="agents", kind=OFF,
                       help="leave out the agent CLIs (claude, codex, gemini, opencode)"),
                Option("--refresh", kind=FLAG,
                       help="pull or bootstrap the base again and rebuild every layer (newer packages and agent "
                            "CLIs)"),
                Option("--json", kind=FLAG,
                       help="print a JSON object (image, id, size, base, ...) instead of the name"),
                Option("-q", "--quiet", kind=FLAG, group="output", help="no progress output, only errors"),
                Option("-v", "--verbose", kind=FLAG, group="output", help="every line of the engine's output"),
            ),
        ),
        Command("ab-image ls", "List agentsh images (localhost/agentsh*): name, id, created, size.", LS_EXAMPLES,
                help="list agentsh images",
                options=(Option("--json", kind=FLAG, help="a JSON list of objects (size in bytes)"),)),
    ),
)


class Progress:
    """Where build output goes: stderr only, so stdout holds just the result.

    quiet: nothing; verbose: every line; tty: the steps, plus one line that
    keeps changing with the latest output; plain: the steps.
    """

    def __init__(self, mode, stream=None):
        self.mode = mode
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.status_shown = False

    @classmethod
    def choose(cls, quiet=False, verbose=False, stream=None):
        stream = stream or sys.stderr
        if quiet:
            return cls("quiet", stream)
        if verbose:
            return cls("verbose", stream)
        return cls("tty" if stream.isatty() else "plain", stream)

    def line(self, text):
        from agentsh.sandbox.image import is_step_line  # lazy: re, subprocess; only for a build's progress

        if self.mode == "verbose":
            self._write(text + "\n")
        elif self.mode == "plain":
            if is_step_line(text):
                self._write(_shorten(text, 200) + "\n")
        elif self.mode == "tty":
            width = _width()
            if is_step_line(text):
                self.clear()
                self._write(_shorten(text, width - 1) + "\n")
            elif text.strip():
                elapsed = int(time.monotonic() - self.started)
                status = f"  [{elapsed // 60}:{elapsed % 60:02d}] {text.strip()}"
                self._write("\r\033[K" + _shorten(status, width - 1))
                self.status_shown = True

    def notice(self, message):
        if self.mode != "quiet":
            self.clear()
            notice(message)

    def clear(self):
        if self.status_shown:
            self._write("\r\033[K")
            self.status_shown = False

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()


def _width():
    import shutil  # lazy: bz2 and lzma come along; only for the progress line

    return max(40, shutil.get_terminal_size((100, 24)).columns)


def _shorten(text, width):
    return text if len(text) <= width else text[: max(1, width - 3)] + "..."


def body(argv):
    p = options.argparser(COMMAND)
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help(sys.stderr)
        return 2
    if args.command == "ls":
        return do_ls(args)
    return do_build(args)


def do_build(args):
    from agentsh.sandbox import image  # lazy: re, subprocess; not for --help or completion

    cfg = config.load()
    progress = Progress.choose(quiet=args.quiet, verbose=args.verbose)
    builder = image.Builder(Engine(cfg["engine"]), cfg, store=Store(), notify=progress.notice,
                            on_line=progress.line)
    tag = args.tag or config.DEFAULT_IMAGE
    try:
        record = builder.build(tag=tag, base=args.base, bootstrap=args.bootstrap, mirror=args.mirror,
                               refresh=args.refresh, agents=args.agents)
    except BaseException as e:
        progress.clear()
        tail = getattr(e, "tail", None)
        if tail and progress.mode != "verbose":
            sys.stderr.write("".join(f"  | {line}\n" for line in tail[-TAIL_LINES:]))
        raise
    progress.clear()
    minutes, seconds = divmod(int(record["seconds"]), 60)
    progress.notice(f"built {record['image']} ({image.human_size(record['size'])}) in {minutes}m{seconds:02d}s")
    if cfg["image"] != record["image"]:
        progress.notice(f"config 'image' is {cfg['image']}: sandboxes run that, not {record['image']}")
    if args.json:
        print_json(record)
    else:
        print(record["image"])
    return 0


def do_ls(args):
    from agentsh.sandbox import image  # lazy: re, subprocess; not for --help or completion

    rows = image.listing(Engine(config.load()["engine"]))
    if args.json:
        print_json(rows)
        return 0
    shown = [{**r, "size": image.human_size(r["size"])} for r in rows]
    widths = [max([len(c)] + [len(str(r[c])) for r in shown]) for c in COLUMNS]
    print("  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths)).rstrip())
    for r in shown:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(COLUMNS, widths)).rstrip())
    return 0


def main():
    run("ab-image", body)
