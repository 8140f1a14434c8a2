from agentsh.app import doctor


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
