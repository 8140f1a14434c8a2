"""Gemini CLI's and opencode's logins in a real sandbox, rootful and rootless, and a refresh racing other commands
of the same sandbox: placeholders inside, the real tokens only at the bound upstream and sealed on the host.

A local HTTPS server with its own test CA stands in for the providers' APIs and token endpoints (Google's
/token, Anthropic's /v1/oauth/token); the proxy trusts that CA upstream (AGENTSH_UPSTREAM_CA).
"""

import json
import subprocess
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration.test_creds_swap import BOUND, Rootful, Rootless, files_holding, stop_proxy
from tests.tls_origin import TLSOrigin

# Gemini CLI (~/.gemini/oauth_creds.json: google-auth-library's credentials)
G_ACCESS, G_REFRESH = "ya29.a0" + "G00gl3Acc3ss_" * 8, "1//0" + "G00gl3R3fr3sh-" * 6
G_ID = "eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6ImFAYi5jIn0." + "s1gn4tur3" * 5
G_NEW = "ya29.a0" + "N3wG00gl3_" * 9
GEMINI = {"access_token": G_ACCESS, "refresh_token": G_REFRESH, "id_token": G_ID, "token_type": "Bearer",
          "expiry_date": 1, "scope": "openid https://www.googleapis.com/auth/cloud-platform"}
# opencode (~/.local/share/opencode/auth.json: an entry per provider)
OC_ACCESS, OC_REFRESH = "sk-ant-oat01-" + "0pencod3Acc_" * 7, "sk-ant-ort01-" + "0pencod3R3f_" * 7
OC_NEW_ACCESS, OC_NEW_REFRESH = "sk-ant-oat01-" + "0cN3wAcc3ss_" * 7, "sk-ant-ort01-" + "0cN3wR3fr3sh" * 7
OC_KEY = "sk-proj-" + "0p3nA1k3y" * 6
OPENCODE = {"anthropic": {"type": "oauth", "refresh": OC_REFRESH, "access": OC_ACCESS, "expires": 1},
            "openai": {"type": "api", "key": OC_KEY}}
# Claude Code's login, refreshed by one command while two others run
R_ACCESS, R_REFRESH = "sk-ant-oat01-" + "R4c3Acc3ssT0k_" * 6, "sk-ant-ort01-" + "R4c3R3fr3shT0_" * 6
R_NEW_ACCESS, R_NEW_REFRESH = "sk-ant-oat01-" + "R4c3N3wAcc3s_" * 7, "sk-ant-ort01-" + "R4c3N3wR3fr3_" * 7
RACE = {"claudeAiOauth": {"accessToken": R_ACCESS, "refreshToken": R_REFRESH, "expiresAt": 1}}
# opencode's GitHub Copilot login: a GitHub token (refresh) exchanged for short-lived Copilot API tokens (access)
CP_GITHUB = "gho_" + "G1tHubL0g1n" * 3 + "xyz"
CP_TOKEN = ("tid=0123abcd;exp=1700000000;sku=copilot_for_individuals;proxy-ep=proxy.individual.githubcopilot.com;"
            "8kp=1:" + "a1b2c3d4" * 8)
CP_NEW = CP_TOKEN.replace("exp=1700000000", "exp=1900000000").replace("a1b2c3d4", "99ff88ee")
COPILOT = {"github-copilot": {"type": "oauth", "refresh": CP_GITHUB, "access": CP_TOKEN, "expires": 1}}
REALS = (G_ACCESS, G_REFRESH, G_ID[-40:], G_NEW, OC_ACCESS, OC_REFRESH, OC_NEW_ACCESS, OC_NEW_REFRESH, OC_KEY,
         R_ACCESS, R_REFRESH, R_NEW_ACCESS, R_NEW_REFRESH, CP_GITHUB, CP_TOKEN[-64:], CP_NEW[-64:])
NAMES = ("GLOGIN", "OCLOGIN", "RLOGIN", "CPLOGIN")

FIELD = r"""field() {{ sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p"; }}
"""
# what Gemini CLI does: refresh at Google's token endpoint (a form body), keep the refresh token, write the file
GEMINI_SCRIPT = FIELD + r"""set -e
f=~/.gemini/oauth_creds.json
cat "$f"; echo
rt=$(field refresh_token < "$f")
answer=$(curl -sS --data-urlencode "refresh_token=$rt" --data grant_type=refresh_token {origin}/token)
echo "$answer"
at=$(echo "$answer" | field access_token)
printf '{{"access_token": "%s", "refresh_token": "%s", "expiry_date": 2}}' "$at" "$rt" > "$f.tmp"
mv "$f.tmp" "$f"
curl -sS -H "Authorization: Bearer $at" {origin}/v1internal:loadCodeAssist
"""
# what opencode does: an API key in its provider's header; a provider's login refreshed (JSON body), written back
OPENCODE_SCRIPT = FIELD + r"""set -e
f=~/.local/share/opencode/auth.json
cat "$f"; echo
key=$(field key < "$f")
curl -sS -H "Authorization: Bearer $key" {origin}/oc-key
rt=$(field refresh < "$f")
answer=$(curl -sS -H 'Content-Type: application/json' \
  --data "{{\"grant_type\": \"refresh_token\", \"refresh_token\": \"$rt\"}}" {origin}/v1/oauth/token)
echo "$answer"
at=$(echo "$answer" | field access_token)
nrt=$(echo "$answer" | field refresh_token)
printf '{{"anthropic": {{"type": "oauth", "refresh": "%s", "access": "%s", "expires": 2}}, "openai": {{"type": "api", "key": "%s"}}}}' \
  "$nrt" "$at" "$key" > "$f.tmp"
mv "$f.tmp" "$f"
curl -sS -H "Authorization: Bearer $at" {origin}/oc-after
"""
# what opencode does for Copilot: the GitHub token in a header to the exchange, the answer's token to the API
COPILOT_SCRIPT = FIELD + r"""set -e
f=~/.cp/auth.json
cat "$f"; echo
answer=$(curl -sS -H "Authorization: token $(field refresh < "$f")" {origin}/copilot_internal/v2/token)
echo "$answer"
curl -sS -H "Authorization: Bearer $(echo "$answer" | field token)" {origin}/cp-after
"""
# the race: A reads the login, waits while B refreshes and C starts, then uses what it read and writes it back
RACE_A = FIELD + r"""f=~/.claude/.credentials.json
at=$(field accessToken < "$f"); rt=$(field refreshToken < "$f")
echo ready > race-ready
i=0; while [ ! -e race-go ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
curl -sS -H "Authorization: Bearer $at" {origin}/race-a-access
curl -sS -H 'Content-Type: application/json' \
  --data "{{\"grant_type\": \"refresh_token\", \"refresh_token\": \"$rt\"}}" '{origin}/v1/oauth/token?race-a'
printf '{{"claudeAiOauth": {{"accessToken": "%s", "refreshToken": "%s", "expiresAt": 3}}}}' "$at" "$rt" > "$f.tmp"
mv "$f.tmp" "$f"
"""
RACE_B = FIELD + r"""set -e
f=~/.claude/.credentials.json
rt=$(field refreshToken < "$f")
answer=$(curl -sS -H 'Content-Type: application/json' \
  --data "{{\"grant_type\": \"refresh_token\", \"refresh_token\": \"$rt\"}}" '{origin}/v1/oauth/token?race-b')
echo "$answer"
at=$(echo "$answer" | field access_token)
nrt=$(echo "$answer" | field refresh_token)
printf '{{"claudeAiOauth": {{"accessToken": "%s", "refreshToken": "%s", "expiresAt": 2}}}}' "$at" "$nrt" > "$f.tmp"
mv "$f.tmp" "$f"
curl -sS -H "Authorization: Bearer $at" {origin}/race-b-after
"""
RACE_C = FIELD + r"""set -e
at=$(field accessToken < ~/.claude/.credentials.json)
curl -sS -H "Authorization: Bearer $at" {origin}/race-c
"""


class RootlessLogins(Rootless):
    def clean(self):
        self.ab("ab-down", "--rm", "--volumes", str(self.base / "repo"))
        for name in NAMES:
            self.ab("ab-creds", "rm", name, "--project", str(self.base / "repo"))
        self.user.run("rm", "-rf", str(self.base))


def _wait(check, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="class", params=[pytest.param("rootful"), pytest.param("rootless", marks=pytest.mark.rootless)])
def logins(request, tmp_path_factory):
    """One sandbox holding Gemini CLI's, opencode's and a Claude Code login as placeholders, and what it did."""
    if request.param == "rootful":
        image = request.getfixturevalue("curl_image")
        base = tmp_path_factory.mktemp("logins")
    else:
        user = request.getfixturevalue("rootless_user")
        image = request.getfixturevalue("rootless_curl_image")
        base = user.mkdir(f"work/logins-{uuid.uuid4().hex[:8]}")
    origin = TLSOrigin(base, [BOUND], bind="0.0.0.0", reflect=False)
    who = Rootful(base, image, origin.ca) if request.param == "rootful" else RootlessLogins(user, image, origin.ca,
                                                                                           base)
    try:
        who.write(who.config, f'[network]\nmode = "allow"\nallow = ["{BOUND}:{origin.port}"]\n')
        repo = who.repo()
        scope = ["--project", str(repo)] if who.kind == "rootless" else []
        for name, target, agent, login in (("GLOGIN", "~/.gemini/oauth_creds.json", "gemini", GEMINI),
                                           ("OCLOGIN", "~/.local/share/opencode/auth.json", "opencode", OPENCODE),
                                           ("RLOGIN", "~/.claude/.credentials.json", "claude", RACE),
                                           ("CPLOGIN", "~/.cp/auth.json", "opencode", COPILOT)):
            who.ab("ab-creds", "set", name, *scope, "--file", target, "--oauth", agent, "--writeback", "--bind-host",
                   BOUND, input=json.dumps(login).encode(), check=True)
            if not scope:
                who.ab("ab-creds", "grant", name, str(repo), check=True)
        url = f"https://{BOUND}:{origin.port}"

        def run(script):
            return who.ab("ab-exec", "--", "sh", "-c", script.format(origin=url), cwd=repo)

        def start(script):
            return subprocess.Popen(who.argv("ab-exec", "--", "sh", "-c", script.format(origin=url)), cwd=repo,
                                    env=who.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        calls = {}
        origin.server.tokens = {"access_token": G_NEW, "expires_in": 3599, "token_type": "Bearer"}
        calls["gemini"] = run(GEMINI_SCRIPT)
        origin.server.tokens = {"access_token": OC_NEW_ACCESS, "refresh_token": OC_NEW_REFRESH, "expires_in": 3600}
        calls["opencode"] = run(OPENCODE_SCRIPT)
        origin.server.tokens = {"token": CP_NEW, "expires_at": 1900000000, "refresh_in": 1500}
        calls["copilot"] = run(COPILOT_SCRIPT)
        # the race: A holds the login's placeholders; B refreshes (a slow token endpoint) and C starts meanwhile
        origin.server.tokens = {"access_token": R_NEW_ACCESS, "refresh_token": R_NEW_REFRESH, "expires_in": 28800}
        a = start(RACE_A)
        b = None
        try:
            _wait(lambda: (repo / "race-ready").exists() or a.poll() is not None, "command A to read the login")
            origin.server.token_delay = 3
            b = start(RACE_B)
            _wait(lambda: any(s["path"].endswith("?race-b") for s in origin.seen) or b.poll() is not None,
                  "command B's refresh")
            calls["race_c"] = run(RACE_C)  # starts while B's refresh is under way
            out, err = b.communicate(timeout=120)
            calls["race_b"] = SimpleNamespace(stdout=out, stderr=err, returncode=b.returncode)
            origin.server.token_delay = 0
            who.write(repo / "race-go", "go\n")
            out, err = a.communicate(timeout=120)
            calls["race_a"] = SimpleNamespace(stdout=out, stderr=err, returncode=a.returncode)
        finally:
            for proc in (a, b):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
        environ = run("for f in /proc/[0-9]*/environ; do cat $f; echo; done 2>/dev/null; "
                      "cat /run/agentsh/secrets/* 2>/dev/null; true").stdout
        inside = {n: run(f"cat {t}").stdout for n, t in (("GLOGIN", "~/.gemini/oauth_creds.json"),
                                                          ("OCLOGIN", "~/.local/share/opencode/auth.json"),
                                                          ("RLOGIN", "~/.claude/.credentials.json"),
                                                          ("CPLOGIN", "~/.cp/auth.json"))}
        stored = {n: json.loads(who.ab("ab-creds", "get", n, *scope, check=True).stdout) for n in NAMES}
        name = who.ab("ab-up", str(repo), check=True).stdout.decode().strip()
        yield SimpleNamespace(repo=repo, who=who, origin=origin, calls=calls, environ=environ, inside=inside,
                              stored=stored, name=name)
    finally:
        origin.close()
        stop_proxy(who.state)
        who.clean()


def _seen(logins, suffix):
    return [s for s in logins.origin.seen if s["path"].endswith(suffix)]


class TestGeminiAndOpencodeLogins:
    def test_gemini_clis_login_refreshes_at_googles_token_endpoint_through_placeholders(self, logins):
        call = logins.calls["gemini"]
        assert call.returncode == 0, call.stderr
        file_seen, answer = (json.loads(line) for line in call.stdout.decode().splitlines()[:2])
        assert file_seen["access_token"].startswith("ya29.") and file_seen["access_token"] != G_ACCESS
        assert file_seen["id_token"].split(".")[:2] == G_ID.split(".")[:2] and file_seen["scope"] == GEMINI["scope"]
        assert answer["access_token"].startswith("ya29.") and answer["access_token"] != G_NEW
        [token] = [s for s in logins.origin.seen if s["path"] == "/token"]
        assert token["body"] == "refresh_token=" + G_REFRESH.replace("/", "%2F") + "&grant_type=refresh_token"
        [after] = _seen(logins, "/v1internal:loadCodeAssist")
        assert after["headers"]["Authorization"] == f"Bearer {G_NEW}"

    def test_gemini_clis_refreshed_login_is_sealed_on_the_host(self, logins):
        stored = logins.stored["GLOGIN"]
        assert (stored["access_token"], stored["refresh_token"], stored["expiry_date"]) == (G_NEW, G_REFRESH, 2)
        inside = json.loads(logins.inside["GLOGIN"])
        assert inside["access_token"].startswith("ya29.") and inside["access_token"] != G_NEW

    def test_opencodes_api_key_and_login_reach_only_the_bound_host_as_values(self, logins):
        call = logins.calls["opencode"]
        assert call.returncode == 0, call.stderr
        lines = call.stdout.decode().splitlines()  # the file, the API's answer, the token endpoint's
        file_seen, answer = json.loads(lines[0]), json.loads(lines[2])
        assert file_seen["openai"]["key"].startswith("sk-proj-") and file_seen["openai"]["key"] != OC_KEY
        assert file_seen["anthropic"]["expires"] == 1
        assert answer["access_token"].startswith("sk-ant-oat01-") and answer["access_token"] != OC_NEW_ACCESS
        [key] = _seen(logins, "/oc-key")
        assert key["headers"]["Authorization"] == f"Bearer {OC_KEY}"
        [token] = [s for s in _seen(logins, "/v1/oauth/token") if OC_REFRESH in s["body"]]
        assert json.loads(token["body"])["refresh_token"] == OC_REFRESH
        [after] = _seen(logins, "/oc-after")
        assert after["headers"]["Authorization"] == f"Bearer {OC_NEW_ACCESS}"

    def test_opencodes_copilot_login_is_exchanged_through_placeholders_and_sealed(self, logins):
        call = logins.calls["copilot"]
        assert call.returncode == 0, call.stderr
        file_seen, answer = (json.loads(line) for line in call.stdout.decode().splitlines()[:2])
        seen = file_seen["github-copilot"]
        assert seen["refresh"].startswith("gho_") and seen["refresh"] != CP_GITHUB
        assert seen["access"].rsplit(":", 1)[0] == CP_TOKEN.rsplit(":", 1)[0] and seen["access"] != CP_TOKEN
        assert answer["token"].rsplit(":", 1)[0] == CP_NEW.rsplit(":", 1)[0] and answer["token"] != CP_NEW
        [exchange] = _seen(logins, "/copilot_internal/v2/token")
        assert exchange["headers"]["Authorization"] == f"token {CP_GITHUB}"
        [after] = _seen(logins, "/cp-after")
        assert after["headers"]["Authorization"] == f"Bearer {CP_NEW}"
        stored = logins.stored["CPLOGIN"]["github-copilot"]
        assert (stored["refresh"], stored["access"], stored["expires"]) == (CP_GITHUB, CP_NEW, 1900000000000)

    def test_opencodes_refreshed_login_is_sealed_on_the_host(self, logins):
        stored = logins.stored["OCLOGIN"]
        assert stored["anthropic"] == {"type": "oauth", "refresh": OC_NEW_REFRESH, "access": OC_NEW_ACCESS,
                                       "expires": 2}
        assert stored["openai"] == {"type": "api", "key": OC_KEY}

    def test_a_refresh_racing_two_other_commands_loses_no_token_and_shows_none(self, logins):
        for call in ("race_a", "race_b", "race_c"):
            assert logins.calls[call].returncode == 0, logins.calls[call].stderr
        # C started during B's refresh: whichever login it saw, the upstream got a real token
        [c] = _seen(logins, "/race-c")
        assert c["headers"]["Authorization"] in (f"Bearer {R_ACCESS}", f"Bearer {R_NEW_ACCESS}")
        [b] = _seen(logins, "/race-b-after")
        assert b["headers"]["Authorization"] == f"Bearer {R_NEW_ACCESS}"
        # A still held the placeholders from before the refresh: they stand for the new tokens now
        [a] = _seen(logins, "/race-a-access")
        assert a["headers"]["Authorization"] == f"Bearer {R_NEW_ACCESS}"
        [a_refresh] = _seen(logins, "?race-a")
        assert json.loads(a_refresh["body"])["refresh_token"] == R_NEW_REFRESH
        # A wrote its old view back last: the host keeps the new tokens (no old one, no placeholder)
        stored = logins.stored["RLOGIN"]["claudeAiOauth"]
        assert (stored["accessToken"], stored["refreshToken"], stored["expiresAt"]) == (R_NEW_ACCESS, R_NEW_REFRESH, 3)
        for call in ("race_a", "race_b", "race_c"):
            for real in REALS:
                assert real.encode() not in logins.calls[call].stdout

    def test_no_real_token_is_in_the_environment_files_home_volume_or_inspect(self, logins):
        who = logins.who
        for n in NAMES:
            assert logins.inside[n].strip()  # the reads did see the login files
        upper = who.written_dir(logins.name)
        home = who.podman("volume", "inspect", "--format", "{{.Mountpoint}}", f"{logins.name}-home").stdout.strip()
        assert Path(upper).is_dir() and Path(home).is_dir()
        inspect = who.podman("container", "inspect", logins.name).stdout
        for real in REALS:
            assert real.encode() not in logins.environ
            assert all(real.encode() not in v for v in logins.inside.values())
            assert files_holding(real.encode(), upper, home) == []
            assert real not in inspect
        for call in ("gemini", "opencode", "copilot"):
            assert all(real.encode() not in logins.calls[call].stdout for real in REALS)
