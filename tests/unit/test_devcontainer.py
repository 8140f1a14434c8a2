import json
import os

import pytest

from agentsh import devcontainer
from agentsh.errors import ConfigError

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.mark.parametrize("text, want", [
    ('{"a": 1,}', {"a": 1}),
    ('{"a": [1, 2, ], }', {"a": [1, 2]}),
    ('{"url": "http://x//y", // c\n "b": "/* not a comment */"}', {"url": "http://x//y", "b": "/* not a comment */"}),
    ('{"q": "say \\"hi\\", // still string"}', {"q": 'say "hi", // still string'}),
    ('/* head */ {"a": /* mid */ 1 /* tail */, /* before brace */ }', {"a": 1}),
    ('{"a": 1, // comment after comma\n}', {"a": 1}),
])
def test_jsonc(text, want):
    assert json.loads(devcontainer.strip_jsonc(text)) == want


def test_real_world_file(tmp_path):
    (tmp_path / ".devcontainer").mkdir()
    with open(os.path.join(DATA, "devcontainer-python.json")) as f:
        (tmp_path / ".devcontainer" / "devcontainer.json").write_text(f.read())
    dc = devcontainer.load(str(tmp_path))
    assert dc.dockerfile == str(tmp_path / ".devcontainer" / "Dockerfile")
    assert dc.context == str(tmp_path)
    assert dc.build_args == {"VARIANT": "3.12-bookworm", "NODE_VERSION": "lts/*"}
    assert dc.user == "vscode"
    assert dc.env == {"APP_ENV": "dev", "URL": "http://example.com/a//b"}
    assert dc.mounts == [f"{tmp_path}/../data:/data:ro"]
    assert dc.ports == [8000, "5432"]
    assert dc.post_create_commands() == [["sh", "-c", "pip3 install --user -r requirements.txt"]]
    assert dc.ignored == ["customizations", "features"]
    assert dc.never_run == ["initializeCommand"]
    assert dc.files() == [dc.path, dc.dockerfile]
    notices = dc.notices()
    assert "ignoring customizations, features" in notices[0] and "never running initializeCommand" in notices[1]


def test_object_post_create_and_old_spelling(tmp_path):
    (tmp_path / ".devcontainer.json").write_text(
        '{"dockerFile": "Containerfile", "postCreateCommand": {"a": "make", "b": ["npm", "ci"]}}')
    dc = devcontainer.load(str(tmp_path))
    assert dc.dockerfile == str(tmp_path / "Containerfile")
    assert dc.post_create_commands() == [["sh", "-c", "make"], ["npm", "ci"]]


def test_errors_name_the_file(tmp_path):
    (tmp_path / ".devcontainer.json").write_text('{"image": "x" "oops"}')
    with pytest.raises(ConfigError, match=r"\.devcontainer\.json: invalid JSON"):
        devcontainer.load(str(tmp_path))
    (tmp_path / ".devcontainer.json").write_text('[1]')
    with pytest.raises(ConfigError, match="top level must be an object"):
        devcontainer.load(str(tmp_path))


def test_absent():
    assert devcontainer.load("/nonexistent-project") is None
