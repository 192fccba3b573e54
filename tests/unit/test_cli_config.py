"""`~/.livekit/cli-config.yaml`: lk's format read and written back with everything else kept."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from callboard.cli import config
from tests.support.cli import LK_CONFIG, config_file, isolate, write_config


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_lives_under_home(home: Path) -> None:
    assert config.config_path() == home / ".livekit" / "cli-config.yaml"
    assert config.display_path(config.config_path()) == "~/.livekit/cli-config.yaml"


def test_no_file_is_an_empty_config(home: Path) -> None:
    cfg = config.load()
    assert cfg.projects == [] and cfg.default_project == "" and cfg.default() is None
    assert not config_file(home).exists()  # reading never creates it


def test_reads_lks_projects(home: Path) -> None:
    write_config(home, LK_CONFIG)
    cfg = config.load()
    assert [p.name for p in cfg.projects] == ["cloud", "staging"]
    assert cfg.default() == config.Project("cloud", "wss://my-app-x7k9.livekit.cloud",
                                           "APIcloudkey", "cloudsecret", "p_2x7k9")
    assert cfg.find("staging") is not None and cfg.find("nope") is None


def test_a_write_keeps_everything_it_does_not_change(home: Path) -> None:
    path = write_config(home, LK_CONFIG, mode=0o644)
    cfg = config.load()
    cfg.add(config.Project("local", "http://127.0.0.1:7880", "devkey", "secret"), False)
    cfg.save()
    text = path.read_text()
    # every line lk wrote is still there, as it was: values, quotes, comments, indentation
    for line in LK_CONFIG.splitlines():
        assert line in text.splitlines(), line
    data = YAML(typ="safe").load(text)
    assert data["projects"][-1] == {"name": "local", "project_id": "", "url":
                                    "http://127.0.0.1:7880", "api_key": "devkey",
                                    "api_secret": "secret"}
    assert data["default_project"] == "cloud"
    assert data["users"][0]["session_token"] == "tok"
    assert data["future_field"] == {"nested": [1, 2, 3], "flag": True}
    assert mode(path) == 0o600


def test_a_new_file_is_private_and_the_first_project_is_the_default(home: Path) -> None:
    cfg = config.load()
    cfg.add(config.Project("a", "http://h:1", "k", "s"), make_default=False)
    cfg.save()
    path = config_file(home)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    again = config.load()
    assert again.default_project == "a" and again.find("a") == config.Project(
        "a", "http://h:1", "k", "s")
    assert YAML(typ="safe").load(path.read_text())["projects"][0]["project_id"] == ""


def test_remove_and_set_default(home: Path) -> None:
    write_config(home, LK_CONFIG)
    cfg = config.load()
    cfg.set_default("staging")
    cfg.save()
    assert config.load().default_project == "staging"
    cfg = config.load()
    cfg.remove("staging")
    cfg.save()
    after = config.load()
    assert [p.name for p in after.projects] == ["cloud"] and after.default_project == ""
    assert "future_field" in config_file(home).read_text()


def test_a_two_space_file_keeps_its_indentation(home: Path) -> None:
    text = "default_project: a\nprojects:\n  - name: a\n    url: http://h\n    api_key: k\n" \
           "    api_secret: s\nother:\n  x: 1\n"
    path = write_config(home, text)
    cfg = config.load()
    cfg.add(config.Project("b", "http://i", "k2", "s2"), False)
    cfg.save()
    written = path.read_text()
    assert written.startswith(text.split("other:")[0])
    assert "  - name: b\n    project_id: ''\n" in written and "other:\n  x: 1\n" in written


@pytest.mark.parametrize(
    ("text", "complaint"),
    [("projects: [unclosed\n", "is not valid YAML (line 2)"),
     ("key: value\n  bad indent: x\n", "is not valid YAML"),
     ("- just\n- a list\n", "is not a mapping"),
     ("projects: 3\n", "`projects` is not a list"),
     ("projects:\n    - just a string\n", "projects[0] is not a mapping"),
     ("default_project: [1]\n", "`default_project` is not a string"),
     ("a: 1\na: 2\n", "is not valid YAML")],
)
def test_an_unusable_file_is_refused_and_never_written(
    home: Path, text: str, complaint: str
) -> None:
    write_config(home, text)
    with pytest.raises(config.ConfigError) as info:
        config.load()
    assert complaint in str(info.value)
    assert "~/.livekit/cli-config.yaml" in str(info.value)
    assert "will not overwrite" in str(info.value)
    assert config_file(home).read_text() == text


def test_an_empty_file_is_an_empty_config(home: Path) -> None:
    write_config(home, "")
    assert config.load().projects == []


def test_an_unreadable_file_says_so(home: Path) -> None:
    path = write_config(home, LK_CONFIG)
    path.unlink()
    path.mkdir()  # a directory where the file should be
    with pytest.raises(config.ConfigError, match=r"cannot read ~/\.livekit/cli-config\.yaml"):
        config.load()
