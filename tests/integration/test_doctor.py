import json

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
