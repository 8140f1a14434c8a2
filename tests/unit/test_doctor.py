import pytest

from agentsh.app import doctor
from agentsh.host import rootless
from tests.unit.fake_engine import fake_engine


def test_ca_check_warns_when_local_cas_exist_but_the_image_bundle_is_used(monkeypatch, tmp_path):
    (tmp_path / "corp.crt").write_text("x")
    monkeypatch.setattr(doctor, "LOCAL_CA_DIRS", (str(tmp_path),))
    check = doctor.ca_check("image")
    assert check["status"] == doctor.WARN and "ca_bundle = \"host\"" in check["fix"]
    assert "1 local CA certificate" in check["detail"]


def test_ca_check_ok_without_local_cas(monkeypatch, tmp_path):
    monkeypatch.setattr(doctor, "LOCAL_CA_DIRS", (str(tmp_path / "none"),))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("NODE_EXTRA_CA_CERTS", raising=False)
    assert doctor.ca_check("image")["status"] == doctor.OK


def test_ca_check_with_a_missing_path(monkeypatch, tmp_path):
    (tmp_path / "corp.crt").write_text("x")
    monkeypatch.setattr(doctor, "LOCAL_CA_DIRS", (str(tmp_path),))
    check = doctor.ca_check(str(tmp_path / "missing.pem"))
    assert check["status"] == doctor.FAIL


def test_bad_config_stops_the_checks(user_config):
    user_config("nonsense = 1\n")
    checks = doctor.run_checks()
    assert [c["status"] for c in checks] == [doctor.FAIL] and "unknown key 'nonsense'" in checks[0]["detail"]


# -- the engine checks, cheap: one start, remembered ------------------------------------------

IMAGE = "localhost/agentsh:latest"


@pytest.fixture
def engine(monkeypatch):
    eng, runner = fake_engine(images={IMAGE})
    runner.probe_output = "claude\ncodex\n"
    monkeypatch.setattr(doctor, "hook_check", lambda environ=None: doctor.Check("hook", doctor.OK, "loaded"))
    return eng, runner


def starts(runner):
    return [c for c in runner.calls if c[0] == "run"]


def by_name(checks):
    return {c["name"]: c for c in checks}


def test_one_start_answers_the_runtime_and_the_agent_programs_and_is_remembered(engine):
    eng, runner = engine
    checks = by_name(doctor.run_checks(engine_factory=lambda name: eng))
    assert checks["runtime"]["status"] == doctor.OK and "started" in checks["runtime"]["detail"]
    assert len(starts(runner)) == 1
    assert checks["agent:claude"]["detail"].startswith("no credential") or checks["agent:claude"]["status"] == "ok"
    assert "gemini is not in" in checks["agent:gemini"]["detail"]
    assert "claude is not in" not in checks["agent:claude"]["detail"]

    again = by_name(doctor.run_checks(engine_factory=lambda name: eng))
    assert len(starts(runner)) == 1  # remembered: no second start
    assert "remembered" in again["runtime"]["detail"] and again["runtime"]["status"] == doctor.OK
    assert "gemini is not in" in again["agent:gemini"]["detail"]

    doctor.run_checks(engine_factory=lambda name: eng, fresh=True)
    assert len(starts(runner)) == 2


def test_a_rebuilt_image_or_another_engine_version_starts_again(engine, monkeypatch):
    from tests.unit import fake_engine as fe

    eng, runner = engine
    doctor.run_checks(engine_factory=lambda name: eng)
    runner.info["version"]["Version"] = "5.0.0"
    doctor.run_checks(engine_factory=lambda name: eng)
    assert len(starts(runner)) == 2
    monkeypatch.setattr(fe, "IMAGE_ID", "sha256:feedbeef")
    doctor.run_checks(engine_factory=lambda name: eng)
    assert len(starts(runner)) == 3


def test_a_failed_start_is_not_remembered(engine):
    eng, runner = engine
    runner.probe_status = 125
    checks = by_name(doctor.run_checks(engine_factory=lambda name: eng))
    assert checks["runtime"]["status"] == doctor.FAIL and not any(n.startswith("agent:") for n in checks)
    runner.probe_status = 0
    doctor.run_checks(engine_factory=lambda name: eng)
    assert len(starts(runner)) == 3  # the failure (two tries) was not remembered


def test_no_run_starts_nothing(engine):
    eng, runner = engine
    checks = by_name(doctor.run_checks(engine_factory=lambda name: eng, run_container=False))
    assert starts(runner) == [] and "runtime" not in checks


def test_rootless_checks_and_vfs_storage(engine, monkeypatch):
    eng, runner = engine
    eng._rootless = True
    runner.info["host"]["security"]["rootless"] = True
    runner.info["store"]["graphDriverName"] = "vfs"
    monkeypatch.setattr(rootless, "problems", lambda **kw: [rootless.Problem(
        "tun", "/dev/net/tun is mode 0600: u cannot open it", "sudo chmod 666 /dev/net/tun", network=True)])
    checks = by_name(doctor.run_checks(engine_factory=lambda name: eng))
    assert checks["rootless"]["status"] == doctor.FAIL
    assert checks["rootless"]["fix"] == "once, as root: sudo chmod 666 /dev/net/tun"
    assert checks["storage"]["status"] == doctor.WARN and "vfs" in checks["storage"]["detail"]
    assert "podman system reset -f && ab-image build" in checks["storage"]["fix"]
    monkeypatch.setattr(rootless, "problems", lambda **kw: [])
    runner.info["store"]["graphDriverName"] = "overlay"
    checks = by_name(doctor.run_checks(engine_factory=lambda name: eng))
    assert checks["rootless"]["status"] == checks["storage"]["status"] == doctor.OK


def test_rootful_has_no_rootless_checks(engine):
    eng, _ = engine
    checks = by_name(doctor.run_checks(engine_factory=lambda name: eng))
    assert "rootless" not in checks and "storage" not in checks


def test_overlay_fix_writes_storage_conf_or_says_where_to_edit_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fix = doctor.overlay_fix("6.1.0-18-amd64")
    assert fix.startswith(f"mkdir -p {tmp_path}/containers && printf '[storage]\\ndriver = \"overlay\"\\n' > "
                          f"{tmp_path}/containers/storage.conf && podman system reset -f && ab-image build")
    assert "fuse-overlayfs" not in fix and "removes this user's images" in fix
    assert "mount_program" in doctor.overlay_fix("5.10.0-28-amd64")
    (tmp_path / "containers").mkdir()
    (tmp_path / "containers/storage.conf").write_text("[storage]\n")
    assert doctor.overlay_fix("6.1.0").startswith(f'set driver = "overlay" under [storage] in {tmp_path}')


def test_the_image_check_fails_without_the_image(monkeypatch):
    eng, runner = fake_engine()
    checks = by_name(doctor.run_checks(engine_factory=lambda name: eng))
    assert checks["image"]["status"] == doctor.FAIL and starts(runner) == []
