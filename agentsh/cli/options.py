"""Each command's options, declared once: the table its parsers and completion read.

A command module declares a `Command` (its name, summary, examples, options
and positionals, and its subcommands). Three things read that one table:

- `fast_parse`, a hand parser for the common command lines of ab-exec and
  ab-up, which must start in a few milliseconds: this module imports nothing
  (no argparse, re, json or enum) and the parser gives up (None) on anything
  unusual, for argparse to handle;
- `argparser`, the argparse parser behind `--help` and usage errors (exit 2);
- completion (agentsh.cli.completion): flags, choices, and the kind of value
  an option or positional names (`value=DIR`, `CREDENTIAL`, ...), read from
  the option itself.
"""

# What a value names, for completion. DIR and FILE let the shell complete paths;
# the others are completed from agentsh's state on disk.
DIR, FILE, CREDENTIAL, WORKTREE, SANDBOX, IMAGE, AGENT = (
    "dir", "file", "credential", "worktree", "sandbox", "image", "agent")

# Choices more than one command offers. The network modes are agentsh.policy.rules.MODES,
# spelled here because that module imports re (a test keeps the two equal).
NETWORK_MODES = ("full", "none", "allow", "learn")
ISOLATIONS = ("container", "gvisor")  # config `isolation` (agentsh.sandbox.isolation.CHOICES)

# How an option stores what it is given (argparse's actions of the same meaning).
FLAG = "flag"      # store_true
OFF = "off"        # store_false (--no-X)
VALUE = "value"    # store: one value, the last one given wins
APPEND = "append"  # append: repeatable

# Positional nargs besides one word: "?" (optional) and the rest of the line.
OPTIONAL, REST = "?", "rest"
_NO_DEFAULT = object()


class Option:
    """One option: its flags (`-e`, `--env`), where it is stored (dest) and how.

    group: options with the same group name exclude each other. hidden: parsed,
    but neither in --help nor completed. value: what the value names (DIR, ...).
    """

    __slots__ = ("flags", "dest", "kind", "help", "choices", "metavar", "default", "group", "hidden", "value")

    def __init__(self, *flags, dest=None, kind=VALUE, help=None, choices=None, metavar=None, default=_NO_DEFAULT,
                 group=None, hidden=False, value=None):
        self.flags = flags
        self.dest = dest or next((f for f in flags if f.startswith("--")), flags[0]).lstrip("-").replace("-", "_")
        self.kind = kind
        self.help = help
        self.choices = choices
        self.metavar = metavar
        self.default = default
        self.group = group
        self.hidden = hidden
        self.value = value

    @property
    def takes_value(self):
        return self.kind in (VALUE, APPEND)

    def initial(self):
        """The value before the command line is read (argparse's default)."""
        if self.default is not _NO_DEFAULT:
            return list(self.default) if isinstance(self.default, list) else self.default
        return {FLAG: False, OFF: True}.get(self.kind)


class Arg:
    """One positional: one word, an optional one (nargs=OPTIONAL), or the rest of the line (REST)."""

    __slots__ = ("dest", "nargs", "help", "choices", "metavar", "value")

    def __init__(self, dest, nargs=None, help=None, choices=None, metavar=None, value=None):
        self.dest = dest
        self.nargs = nargs
        self.help = help
        self.choices = choices
        self.metavar = metavar
        self.value = value


class Command:
    """A command (or a subcommand): what --help says, its options and positionals, its subcommands.

    summary is the description under the usage line, help the line a parent
    command lists for it. subcommands are argparse subcommands (dest, metavar
    and required as argparse's add_subparsers takes them) unless the command
    dispatches them itself (ab-wt), which then builds each one's parser.
    """

    __slots__ = ("name", "summary", "examples", "options", "args", "usage", "help", "subcommands",
                 "sub_dest", "sub_metavar", "sub_required")

    def __init__(self, name, summary=None, examples=(), options=(), args=(), usage=None, help=None,
                 subcommands=(), sub_dest=None, sub_metavar=None, sub_required=False):
        self.name = name
        self.summary = summary
        self.examples = examples
        self.options = options
        self.args = args
        self.usage = usage
        self.help = help
        self.subcommands = {c.name.rpartition(" ")[2]: c for c in subcommands}
        self.sub_dest = sub_dest
        self.sub_metavar = sub_metavar
        self.sub_required = sub_required

    def option(self, word):
        """The option a command-line word names exactly (`--dir`, `-e`), or None."""
        for opt in self.options:
            if word in opt.flags:
                return opt
        return None


class Values:
    """Parsed arguments, as attributes (what argparse's Namespace holds)."""

    def __repr__(self):
        return f"Values({vars(self)!r})"


# -- the fast parser --------------------------------------------------------------


def fast_parse(command, argv):
    """argv parsed by the table without argparse, or None for anything unusual.

    Unusual: --help, an unknown or abbreviated option, a missing value, a value
    or a positional that starts with '-', a value outside an option's choices,
    two options of one group, too many positionals. argparse then parses (and
    explains) exactly those, so whatever this returns, argparse returns too.
    """
    args = Values()
    for opt in command.options:
        if not hasattr(args, opt.dest):  # the first option of a dest gives its default, as in argparse
            setattr(args, opt.dest, opt.initial())
    positionals = list(command.args)
    for arg in positionals:
        setattr(args, arg.dest, [] if arg.nargs == REST else None)
    groups = {}
    i, n = 0, len(argv)
    while i < n:
        tok = argv[i]
        i += 1
        if tok == "--":
            if positionals and positionals[0].nargs == REST:
                setattr(args, positionals[0].dest, argv[i:])
                return args
            return None  # argparse's rules for `--` before other positionals are subtle
        if tok.startswith("-") and tok != "-":
            name, eq, value = tok.partition("=")
            opt = command.option(name)
            if opt is None or (eq and not opt.takes_value):
                return None
            if opt.group is not None and groups.setdefault(opt.group, opt) is not opt:
                return None
            if opt.kind == FLAG:
                setattr(args, opt.dest, True)
            elif opt.kind == OFF:
                setattr(args, opt.dest, False)
            else:
                if not eq:
                    if i >= n:
                        return None
                    value = argv[i]
                    i += 1
                if value.startswith("-") or (opt.choices is not None and value not in opt.choices):
                    return None
                if opt.kind == APPEND:
                    got = getattr(args, opt.dest)
                    setattr(args, opt.dest, [*(got or ()), value])
                else:
                    setattr(args, opt.dest, value)
            continue
        if not positionals:
            return None
        arg = positionals.pop(0)
        if arg.nargs == REST:
            setattr(args, arg.dest, argv[i - 1:])
            return args
        if arg.choices is not None and tok not in arg.choices:
            return None
        setattr(args, arg.dest, tok)
    if any(arg.nargs is None for arg in positionals):
        return None  # a required positional is missing
    return args


# -- argparse -----------------------------------------------------------------------


def argparser(command):
    """The argparse parser for a command (and its argparse subcommands), for --help and usage errors."""
    import argparse  # lazy: argparse (~6 ms) only for --help and what the fast parser leaves

    parser = argparse.ArgumentParser(prog=command.name, **_parser_texts(command))
    _fill(parser, command)
    return parser


def _parser_texts(command):
    import argparse  # lazy: as in argparser

    # The summary and the examples are laid out as written.
    kw = {"description": command.summary, "usage": command.usage,
          "formatter_class": argparse.RawDescriptionHelpFormatter}
    if command.examples:
        kw["epilog"] = "examples:\n" + "\n".join(f"  {line}" for line in command.examples)
    return kw


def _fill(parser, command):
    import argparse  # lazy: as in argparser

    for arg in command.args:
        kw = {"help": arg.help, "metavar": arg.metavar}
        if arg.choices is not None:
            kw["choices"] = arg.choices
        if arg.nargs is not None:
            kw["nargs"] = argparse.REMAINDER if arg.nargs == REST else arg.nargs
        parser.add_argument(arg.dest, **kw)
    groups = {}
    for opt in command.options:
        target = parser
        if opt.group is not None:
            if opt.group not in groups:
                groups[opt.group] = parser.add_mutually_exclusive_group()
            target = groups[opt.group]
        kw = {"dest": opt.dest, "help": argparse.SUPPRESS if opt.hidden else opt.help}
        if opt.kind == FLAG:
            kw["action"] = "store_true"
        elif opt.kind == OFF:
            kw["action"] = "store_false"
        else:
            kw["action"] = "append" if opt.kind == APPEND else "store"
            kw["metavar"] = opt.metavar
            if opt.choices is not None:
                kw["choices"] = opt.choices
        if opt.default is not _NO_DEFAULT:
            kw["default"] = opt.default
        target.add_argument(*opt.flags, **kw)
    if command.subcommands:
        sub = parser.add_subparsers(dest=command.sub_dest, metavar=command.sub_metavar, required=command.sub_required)
        for name, child in command.subcommands.items():
            _fill(sub.add_parser(name, help=child.help, **_parser_texts(child)), child)


def parse(command, argv, fast=False):
    """argv parsed by the table: by hand when `fast` and it is a common command line, else by argparse.

    A usage error (or --help) exits as argparse does: status 2 (or 0).
    """
    args = fast and fast_parse(command, argv)
    if args:
        return args
    args = argparser(command).parse_args(argv)
    for arg in command.args:
        if arg.nargs == REST and getattr(args, arg.dest)[:1] == ["--"]:
            setattr(args, arg.dest, getattr(args, arg.dest)[1:])  # argparse keeps the `--` that starts the rest
    return args
