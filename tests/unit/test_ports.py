import pytest

from agentsh.base.errors import UsageError
from agentsh.policy import ports


@pytest.mark.parametrize("spec, want", [
    ("8080:80", {"ip": "127.0.0.1", "host": 8080, "container": 80, "proto": "tcp"}),
    ("0.0.0.0:8080:80/udp", {"ip": "0.0.0.0", "host": 8080, "container": 80, "proto": "udp"}),
    ("[::1]:9000:9000", {"ip": "[::1]", "host": 9000, "container": 9000, "proto": "tcp"}),
    (5173, {"ip": "127.0.0.1", "host": ports.stable_host_port("/p", 5173), "container": 5173, "proto": "tcp"}),
    ("10.0.0.5::3000", {"ip": "10.0.0.5", "host": ports.stable_host_port("/p", 3000), "container": 3000,
                        "proto": "tcp"}),
])
def test_parse(spec, want):
    assert ports.parse(spec, "/p") == want


@pytest.mark.parametrize("spec, words", [
    ("80:", "is not [IP:][HOST:]CONTAINER"),
    ("70000:80", "out of range"),
    ("8080:80/icmp", "protocol must be one of"),
    ("999.1.1.1:80:80", "is not an IP address"),
    ("8080:80; rm -rf /", "is not [IP:]"),
    ("1000-1010:1000-1010", "is not [IP:]"),
    (True, "must be a string"),
])
def test_bad_ports_are_refused(spec, words):
    with pytest.raises(UsageError, match=words.replace("[", r"\[")):
        ports.parse(spec, "/p")


def test_stable_ports_differ_per_project_and_stay_put():
    a = ports.stable_host_port("/src/app", 3000)
    assert a == ports.stable_host_port("/src/app", 3000)
    assert a != ports.stable_host_port("/data/wt/app-feature", 3000)
    assert ports.STABLE_RANGE[0] <= a <= ports.STABLE_RANGE[1]


def test_publish_args_and_duplicates():
    assert ports.publish_args(["8080:80", "53:53/udp"], "/p") == [
        "-p", "127.0.0.1:8080:80/tcp", "-p", "127.0.0.1:53:53/udp"]
    with pytest.raises(UsageError, match="both publish host port 8080/tcp"):
        ports.publish_args(["8080:80", "8080:81"], "/p")
