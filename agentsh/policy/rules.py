"""Network policy as data: modes, allowlist rules, what they admit, and proposals from a log.

Modes (config `[network] mode`): "full" (the engine's default network),
"none" (loopback only), "allow" (only the hosts in `[network] allow`, through
agentsh's egress proxy) and "learn" (everything through the proxy, logged).
A rule is a host name, `*.domain`, an IP address or range, each with ports;
`classify` names the internal range an address lies in, which only a rule
naming that address or range (or the exact host name) admits.
"""

from __future__ import annotations

import re

from agentsh.base.errors import ConfigError

TYPE_CHECKING = False  # typing stays off the hot paths
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Iterable, Mapping
    from typing import Any

    IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
    # _table's rows: (shift, network >> shift, reason, (version, first address, prefix length))
    TableRow = tuple[int, int, str, tuple[int, int, int]]

FULL, NONE, ALLOW, LEARN = "full", "none", "allow", "learn"
MODES = (FULL, NONE, ALLOW, LEARN)
PROXIED = (ALLOW, LEARN)
DEFAULT_PORTS = (80, 443)
# The agents' APIs: what lockdown allows when no agent profile narrows it.
LOCKDOWN_SETS = ("anthropic", "openai", "google")
# Names that mean "the host" to a container (Podman, Docker); the proxy runs
# there, so it reaches them on the host's loopback.
HOST_ALIASES = ("host.containers.internal", "host.docker.internal")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
# How a refusal of an internal address ends (in the log and in the reply).
NAME_IT = "only a rule naming that address or its range allows it"


class Rule:
    """One allowlist entry: a host pattern or an address range, and the ports it opens (None: any).

    `ip` is an address range (an ipaddress network; a single address is a
    /32 or /128) for IP rules, else None. Matching an address costs two
    integer operations on values computed here.
    """

    __slots__ = ("text", "host", "wildcard", "ip", "ports", "_version", "_shift", "_key")

    def __init__(self, text: str, host: str | None, wildcard: bool, ip: IPNetwork | None,
                 ports: frozenset[int] | None) -> None:
        self.text, self.host, self.wildcard, self.ip, self.ports = text, host, wildcard, ip, ports
        if ip is not None:
            self._version = ip.version
            self._shift = ip.max_prefixlen - ip.prefixlen
            self._key = int(ip.network_address) >> self._shift

    def contains(self, addr: IPAddress) -> bool:
        """Whether the address lies in this rule's range (False for name rules)."""
        return self.ip is not None and addr.version == self._version and int(addr) >> self._shift == self._key

    def within(self, block: tuple[int, int, int]) -> bool:
        """Whether this rule's whole range lies inside `block` (version, first address as int, prefix length)."""
        version, base, plen = block
        if self.ip is None or version != self._version or self.ip.prefixlen < plen:
            return False
        shift = self.ip.max_prefixlen - plen
        return int(self.ip.network_address) >> shift == base >> shift

    def matches(self, host: str, port: int, host_ip: IPAddress | None) -> bool:
        if self.ports is not None and port not in self.ports:
            return False
        if self.ip is not None or host_ip is not None:
            return host_ip is not None and self.contains(host_ip)
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, no IPv6 brackets."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def ip_literal(host: str) -> IPAddress | None:
    """The address when `host` is an IP literal, else None."""
    import ipaddress  # lazy: warm ab-up loads this module but parses no address

    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def unmapped(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address it is; others unchanged.

    A connection to a mapped address is a connection to its IPv4 address, so
    rules and checks see that one.
    """
    if addr.version == 6 and int(addr) >> 32 == 0xFFFF:
        import ipaddress  # lazy: warm ab-up loads this module but parses no address

        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def parse_host(text: str) -> tuple[str, IPAddress | None]:
    """(host, address or None) for a destination the sandbox named; ValueError when it is no such thing.

    The host comes back normalised (normalize_host). An IP literal must be in
    canonical form: IPv6 without a zone id (`fe80::1%eth0` is refused),
    IPv4 as four decimal octets. Spellings the C library would also read as
    an IPv4 address (`127.1`, `0x7f.0.0.1`, `0177.0.0.1`, `2130706433`) are
    refused rather than guessed at, so the proxy never asks a resolver about
    a name that is really an address. Anything else must be a DNS name:
    labels of letters, digits, `-` and `_`, at most 253 characters.
    """
    host = normalize_host(text)
    if not host:
        raise ValueError("no host")
    if len(host) > 253:
        raise ValueError("host name too long")
    if "%" in host:
        raise ValueError("IPv6 zone ids are not accepted")
    import ipaddress  # lazy: warm ab-up loads this module but parses no address

    if ":" in host:
        try:
            return host, unmapped(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError("not a host name or IP address") from None
    if host[0] in "0123456789":
        try:
            return host, ipaddress.IPv4Address(host)
        except ValueError:
            pass
        import socket  # lazy: only for a short-form IPv4 literal

        try:
            packed = socket.inet_aton(host)
        except (OSError, ValueError):
            pass
        else:
            raise ValueError(f"non-canonical IPv4 address (the C library reads it as {socket.inet_ntoa(packed)})")
    if not all(_LABEL.match(label) for label in host.split(".")):
        raise ValueError("not a host name or IP address")
    return host, None


# -- which addresses are internal -----------------------------------------------------
#
# The proxy connects from the host's network, so an address there that is not
# global unicast reaches the host itself or its LAN. Such an address is
# refused unless a rule names it (see Policy.admits). IPv6 forms that embed
# an IPv4 address are judged by the IPv4 address they carry.

_V4_BLOCKS = (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_BLOCKS = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "reserved"),
    ("2001:20::/28", "reserved"),
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
# IPv6 /96 prefixes whose low 32 bits are an IPv4 address: the address >> 32
# -> the form's name. (6to4 and Teredo carry theirs elsewhere; see classify.)
_EMBEDDING = {
    0: "IPv4-compatible",  # ::a.b.c.d (deprecated)
    0xFFFF: "IPv4-mapped",  # ::ffff:a.b.c.d
    0xFFFF0000: "IPv4-translated",  # ::ffff:0:a.b.c.d
    0x64FF9B << 64: "NAT64",  # 64:ff9b::a.b.c.d
}
_tables = None


def _table(blocks: Iterable[tuple[str, str]]) -> tuple[TableRow, ...]:
    import ipaddress  # lazy: warm ab-up loads this module but parses no address

    out = []
    for text, reason in blocks:
        net = ipaddress.ip_network(text)
        shift = net.max_prefixlen - net.prefixlen
        out.append((shift, int(net.network_address) >> shift, reason, (net.version, int(net.network_address),
                                                                        net.prefixlen)))
    return tuple(out)


def _lookup(table: Iterable[TableRow], value: int) -> tuple[str, tuple[int, int, int]] | None:
    for shift, key, reason, block in table:
        if value >> shift == key:
            return reason, block
    return None


def classify(addr: IPAddress) -> tuple[str, tuple[int, int, int]] | None:
    """None for a global unicast address; else (reason, block) with the special-purpose block it lies in.

    `block` is (version, first address as int, prefix length): a rule names
    the address only if its range lies inside that block. IPv4-mapped,
    -compatible, -translated, NAT64 and 6to4 addresses are judged by the
    IPv4 address they embed (Python's own is_loopback/is_private do not look
    inside them); the compatible and translated forms, never valid
    destinations, are refused even around a public address. Teredo
    addresses are refused when their server or client address is internal.
    Any other IPv6 address outside 2000::/3 is reserved.
    """
    global _tables
    if _tables is None:
        _tables = _table(_V4_BLOCKS), _table(_V6_BLOCKS)
    v4, v6 = _tables
    n = int(addr)
    if addr.version == 4:
        return _lookup(v4, n)
    found = _lookup(v6, n)
    if found is not None:
        return found
    high = n >> 32
    form = _EMBEDDING.get(high)
    if form is not None:
        inner = _lookup(v4, n & 0xFFFFFFFF)
        if inner is not None:
            reason, (_, base, plen) = inner
            return f"{form} {reason}", (6, (high << 32) | base, 96 + plen)
        if form == "NAT64":
            return None
        if form == "IPv4-mapped":  # callers pass unmapped() addresses; this is for completeness
            return None
        return f"{form} (deprecated)", (6, high << 32, 96)
    if n >> 112 == 0x2002:  # 6to4: 2002:a.b.c.d::/48
        inner = _lookup(v4, (n >> 80) & 0xFFFFFFFF)
        if inner is not None:
            reason, (_, base, plen) = inner
            return f"6to4 {reason}", (6, (0x2002 << 112) | (base << 80), 16 + plen)
        return None
    if n >> 96 == 0x20010000:  # Teredo: 2001:0:SERVER:flags:port:~CLIENT
        for embedded in ((n >> 64) & 0xFFFFFFFF, ~n & 0xFFFFFFFF):
            inner = _lookup(v4, embedded)
            if inner is not None:
                return f"Teredo {inner[0]}", (6, n, 128)
        return None
    if n >> 125 != 1:  # outside 2000::/3, the only global unicast space
        return "reserved", (6, n, 128)
    return None


# -- rules and decisions -----------------------------------------------------------------


def _rule_address(host: str) -> IPNetwork | None:
    """The address range a rule's host names, or None for a host name (ValueError if malformed)."""
    import ipaddress  # lazy: warm ab-up loads this module but parses no address

    if "/" in host:
        try:
            net = ipaddress.ip_network(host)
        except ValueError as e:
            raise ValueError(f"{host!r} is not an address range: {e}") from None
        if net.version == 6 and net.prefixlen >= 96 and int(net.network_address) >> 32 == 0xFFFF:
            net = ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
        return net
    if "%" in host:
        raise ValueError("IPv6 zone ids are not accepted")
    addr = ip_literal(host)
    if addr is None:
        if host[:1] in tuple("0123456789"):
            try:
                parse_host(host)
            except ValueError as e:
                raise ValueError(f"{host!r}: {e}") from None
        return None
    return ipaddress.ip_network(unmapped(addr))


def parse_rule(text: str) -> Rule:
    """'host', '*.domain', 'host:443', 'host:*', '10.0.0.5:8080', '10.0.0.0/8', '[::1]:80', '[fd00::/8]:443' -> Rule.

    ValueError if malformed.
    """
    raw = text.strip()
    host, port = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError("unclosed [")
        host, rest = raw[1:end], raw[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected :PORT after ]")
            port = rest[1:]
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    host = normalize_host(host)
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    ip = _rule_address(host) if not wildcard else None
    if ip is None and (not name or not all(_LABEL.match(label) for label in name.split("."))):
        raise ValueError(f"{host!r} is not a host name, *.domain, IP address or address range")
    if wildcard and ip_literal(name) is not None:
        raise ValueError("a wildcard cannot prefix an IP address")
    if port is None or port == "":
        ports = frozenset(DEFAULT_PORTS)
    elif port == "*":
        ports = None
    elif port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536:
        ports = frozenset([int(port)])
    else:
        raise ValueError(f"{port!r} is not a port (1-65535 or *)")
    return Rule(raw, name, wildcard, ip, ports)


def expand(items: Iterable[str]) -> list[str]:
    """Allowlist items ('@set' names and patterns) -> the patterns, sets expanded, in order, deduplicated."""
    from agentsh.policy.netsets import SETS  # lazy: only when an allowlist is expanded

    out = []
    for item in items:
        if item.startswith("@"):
            name = item[1:]
            if name not in SETS:
                raise ValueError(f"unknown set @{name} (known: {', '.join('@' + s for s in SETS)})")
            out += SETS[name]
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def check_allow(value: object, where: str) -> list[str]:
    """Config checker for `[network] allow`: a list of patterns and @set names."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings such as \"api.example.com\", \"*.npmjs.org\", "
                          "\"github.com:443\" or \"@registries\"")
    try:
        for pattern in expand(value):
            parse_rule(pattern)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}", "see docs/config.md, [network]") from None
    return list(value)


class Policy:
    """What the proxy lets through: a mode and the rules of "allow"."""

    def __init__(self, mode: str, patterns: Iterable[str] = ()) -> None:
        self.mode = mode
        self.patterns = list(dict.fromkeys(patterns))
        self.rules = [parse_rule(p) for p in self.patterns]

    def check(self, host: str, port: int) -> tuple[bool, str, str, IPAddress | None]:
        """(allowed, rule text or reason, host, address or None) for a destination, before any DNS lookup.

        Deciding first means a denied name is never resolved: the sandbox
        cannot use the proxy's resolver to leak data in DNS queries. An IP
        literal is also checked here against the internal ranges (admits);
        a name's addresses are checked by the proxy once it resolved them.
        """
        try:
            host, addr = parse_host(host)
        except ValueError as e:
            return False, str(e), host, None
        for rule in self.rules:
            if rule.matches(host, port, addr):
                why = rule.text
                break
        else:
            if self.mode != LEARN:
                return False, "IP address not on the allowlist" if addr is not None else "not on the allowlist", \
                    host, addr
            why = "learn"
        if addr is not None:
            ok, reason = self.admits(host, port, addr)
            if not ok:
                return False, f"{addr} is an internal address ({reason}); {NAME_IT}", host, addr
        return True, why, host, addr

    def decide(self, host: str, port: int) -> tuple[bool, str]:
        """(allowed, rule text or reason) for a destination, before any DNS lookup (see check)."""
        return self.check(host, port)[:2]

    def admits(self, host: str, port: int, addr: IPAddress) -> tuple[bool, str]:
        """(True, rule text or "") when the proxy may connect to `addr` for host:port, else (False, what it is).

        A global unicast address: yes. An internal one (loopback, private,
        link-local, ...; see classify) only when a rule for that port names
        it: an IP rule whose range contains the address and lies inside its
        special-purpose block (`127.0.0.1`, `10.0.0.0/8`, not `0.0.0.0/0`),
        or a rule naming the host itself, with no wildcard (`localhost:8080`,
        `host.containers.internal:8080`). A wildcard (`*.example.com`)
        never names an address: its zone's owner chooses what it resolves to.
        """
        found = classify(unmapped(addr))
        if found is None:
            return True, ""
        reason, block = found
        literal = ip_literal(host) is not None
        for rule in self.rules:
            if rule.ports is not None and port not in rule.ports:
                continue
            if rule.ip is not None:
                if rule.contains(unmapped(addr)) and rule.within(block):
                    return True, rule.text
            elif not literal and not rule.wildcard and rule.host == host:
                return True, rule.text
        return False, reason

    def explicit(self, host: str, port: int) -> bool:
        """Whether a listed rule (not learn mode) names this destination."""
        host = normalize_host(host)
        addr = ip_literal(host)
        addr = None if addr is None else unmapped(addr)
        return any(r.matches(host, port, addr) for r in self.rules)


def config_patterns(cfg: Mapping[str, Any]) -> list[str]:
    return expand(cfg["network"].get("allow") or [])


# -- learn mode -> allowlist ------------------------------------------------------------


def propose(entries: Iterable[dict]) -> tuple[list[str], list[dict]]:
    """Turn audit entries into allowlist patterns for review.

    Hosts covered by a built-in set become that set ('@github') when every
    host of the log's that the set matches is in it; other hosts are listed
    as-is, with ':PORT' unless the port is 80 or 443. Entries whose host is
    no host name or canonical IP address (what a hostile request may log)
    are left out. Returns (patterns, per-destination counts).
    """
    from agentsh.policy.netsets import SETS  # lazy: only for ab-net propose

    seen = {}
    for e in entries:
        port = e.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            continue
        try:
            host = parse_host(str(e.get("host", "")))[0]
        except ValueError:
            continue
        seen[(host, port)] = seen.get((host, port), 0) + 1
    set_rules = {name: Policy(ALLOW, patterns) for name, patterns in SETS.items()}
    patterns = []
    for (host, port), _count in sorted(seen.items()):
        covering = next((name for name, pol in set_rules.items() if pol.explicit(host, port)), None)
        if covering:
            patterns.append(f"@{covering}")
        elif port in DEFAULT_PORTS:
            patterns.append(f"[{host}]" if ":" in host else host)
        else:
            patterns.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    counts = [{"host": h, "port": p, "count": c} for (h, p), c in sorted(seen.items())]
    return list(dict.fromkeys(patterns)), counts
