import json
import subprocess
import time

import pytest

from tests.conftest import ab


def test_doctor_runs_a_throwaway_container(sandbox_env, tiny_image):
    proc = ab("ab-doctor", "--json")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert checks["image"]["status"] == "ok" and tiny_image in checks["image"]["detail"]
    assert checks["runtime"]["status"] == "ok"
    assert checks["state"]["status"] == "ok"
    assert proc.returncode == 0


def test_doctor_fails_and_names_the_fix_for_a_missing_image(engine_ready, user_config):
    user_config('image = "localhost/agentsh-test-absent:latest"\n')
    proc = ab("ab-doctor")
    assert proc.returncode == 1
    assert b"FAIL  image" in proc.stdout and b"fix: build it: ab-image build" in proc.stdout


def checks_of(proc):
    return {c["name"]: c for c in json.loads(proc.stdout)}


def test_a_passed_start_is_remembered_and_the_next_doctor_is_quick(sandbox_env, tiny_image):
    first = checks_of(ab("ab-doctor", "--json"))
    assert first["runtime"]["status"] == "ok" and "remembered" not in first["runtime"]["detail"]
    started = time.monotonic()
    again = checks_of(ab("ab-doctor", "--json"))
    assert time.monotonic() - started < 3
    assert again["runtime"]["status"] == "ok" and "remembered" in again["runtime"]["detail"]
    fresh = checks_of(ab("ab-doctor", "--json", "--fresh"))
    assert "remembered" not in fresh["runtime"]["detail"]


@pytest.mark.rootless
def test_rootless_doctor_checks_what_root_must_give_and_the_storage(rootless_user):
    proc = rootless_user.run("ab-doctor", "--json")
    checks = checks_of(proc)
    assert checks["engine"]["detail"].endswith("rootless")
    assert checks["rootless"]["status"] == "ok", checks["rootless"]
    assert checks["storage"]["status"] in ("ok", "warn") and ("vfs" in checks["storage"]["detail"]) == (
        checks["storage"]["status"] == "warn")
    assert checks["runtime"]["status"] == "ok"
    started = time.monotonic()
    assert "remembered" in checks_of(rootless_user.run("ab-doctor", "--json"))["runtime"]["detail"]
    assert time.monotonic() - started < 3


@pytest.mark.rootless
def test_a_tun_device_the_user_cannot_open_is_named_with_its_fix(rootless_user, tmp_path):
    """/dev/net/tun at mode 0600 (its default on some hosts), in a mount namespace of this test's own."""
    node = tmp_path / "tun"
    script = (f"mknod {node} c 10 200 && chmod 600 {node} && mount --bind {node} /dev/net/tun && "
              f"exec runuser -u {rootless_user.name} -- env -i "
              + " ".join(f"{k}={v}" for k, v in rootless_user.env.items()) + " ab-doctor --json --no-run")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                          cwd=rootless_user.home, timeout=120)
    check = checks_of(proc)["rootless"]
    assert check["status"] == "fail" and "/dev/net/tun is mode 0600" in check["detail"], proc.stderr
    assert check["fix"] == "once, as root: sudo chmod 666 /dev/net/tun"
    assert proc.returncode == 1
