"""Published ports against real Podman: reachable from the host, stable, kept, shown by ab-status."""

import json
import time
import urllib.request

import pytest

from agentsh.policy.ports import stable_host_port
from tests.conftest import ab, inspect

pytestmark = pytest.mark.usefixtures("sandbox_env")


def serve(repo, port):
    """busybox httpd in the sandbox, serving one file."""
    ab("ab-exec", "--dir", str(repo), "--", "sh", "-c",
       f"mkdir -p /tmp/www && echo hello-from-sandbox > /tmp/www/index.html && httpd -p {port} -h /tmp/www",
       check=True)


def fetch(host_port, tries=50):
    for _ in range(tries):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/index.html", timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answered on 127.0.0.1:{host_port}")


def status_ports(repo):
    return json.loads(ab("ab-status", "--json", str(repo), check=True).stdout)["ports"]


def test_a_port_without_host_side_is_published_on_a_stable_port_reachable_from_the_host(repo):
    name = json.loads(ab("ab-up", str(repo), "-p", "8080", "--json", check=True).stdout)["name"]
    host_port = stable_host_port(str(repo), 8080)
    bindings = inspect(name)["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(host_port)}]}
    assert status_ports(repo) == [{"ip": "127.0.0.1", "host": host_port, "container": 8080, "proto": "tcp"}]
    text = ab("ab-status", str(repo), check=True).stdout.decode()
    assert f"127.0.0.1:{host_port}->8080/tcp" in text
    serve(repo, 8080)
    assert fetch(host_port) == b"hello-from-sandbox\n"
    # a later ab-up without -p keeps the sandbox and its ports; so does a restart after a stop
    first_id = inspect(name)["Id"]
    ab("ab-up", str(repo), check=True)
    ab("ab-down", str(repo), check=True)
    ab("ab-up", str(repo), check=True)
    assert inspect(name)["Id"] == first_id
    assert status_ports(repo)[0]["host"] == host_port


def test_explicit_host_port_and_config_ports(repo, user_config, tiny_image):
    user_config(f'image = "{tiny_image}"\nports = ["127.0.0.1:28999:9000"]\n')
    ab("ab-up", str(repo), "-p", "28998:9001", check=True)
    assert {(p["host"], p["container"]) for p in status_ports(repo)} == {(28999, 9000), (28998, 9001)}
    serve(repo, 9000)
    assert fetch(28999) == b"hello-from-sandbox\n"


@pytest.mark.parametrize("bad", ["70000", "abc", "1.2.3:80:80", "80/xyz"])
def test_bad_port_specs_are_usage_errors(repo, bad):
    proc = ab("ab-up", str(repo), "-p", bad)
    assert proc.returncode == 2 and proc.stderr.decode().count("\n") == 1
