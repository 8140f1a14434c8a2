"""Credential values that come from a command run on the host when a sandbox needs them.

Like AWS's credential_process: the command's stdout is the value (or, in
format "aws-credential-process", JSON turned into a credentials file). It
runs in a session of its own, so a timeout kills everything it started.
"""

import json
import os
import signal
import subprocess

from agentsh.base.errors import CredentialError


def run_command(cmd: str, name: str, timeout: float) -> bytes:
    """Run a credential command on the host (like AWS credential_process); its stdout."""
    proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a child may hold the pipe
        proc.communicate()
        raise CredentialError(f"credential {name}: its command did not finish within {timeout} s",
                              "check it by running it yourself, or store the value instead") from None
    if proc.returncode != 0:
        last = (err.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:200]
        raise CredentialError(f"credential {name}: its command failed (exit {proc.returncode})"
                              + (f": {last}" if last else ""), "check it by running it yourself")
    if not out.strip():
        raise CredentialError(f"credential {name}: its command printed nothing", "check it by running it yourself")
    return out


def aws_credentials_file(output: bytes, name: str) -> bytes:
    """credential_process JSON -> a ~/.aws/credentials file for the default profile."""
    try:
        data = json.loads(output)
        lines = ["[default]", f"aws_access_key_id = {data['AccessKeyId']}",
                 f"aws_secret_access_key = {data['SecretAccessKey']}"]
    except (ValueError, KeyError, TypeError):
        raise CredentialError(f"credential {name}: its credential_process did not print the JSON AWS expects",
                              "check it with 'aws configure export-credentials'") from None
    if data.get("SessionToken"):
        lines.append(f"aws_session_token = {data['SessionToken']}")
    return ("\n".join(lines) + "\n").encode()
