"""`~/.livekit/cli-config.yaml`, shared with LiveKit's `lk`: the projects a developer talks to.

The file is `lk`'s: `default_project` and `projects: [{name, project_id, url, api_key,
api_secret}]`, plus whatever else `lk` (or a person) keeps there — users, device name, theme,
comments. We load it with ruamel.yaml's round-trip mode and change only what a command is about, so
everything else survives a write. The file holds secrets: it is written with mode 0600 (its folder
0700), by replacing it atomically. A file that is not valid YAML, or not shaped like `lk`'s, is
never written over: the command stops and says where the file is and what is wrong with it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

FILE_MODE = 0o600
DIR_MODE = 0o700
PROJECT_FIELDS = ("name", "project_id", "url", "api_key", "api_secret")
LK_INDENT = (4, 6, 4)  # what `lk` (Go's yaml.v3) writes: mapping, sequence item, dash offset


class ConfigError(Exception):
    """The config file cannot be used (unreadable, not YAML, not lk's shape)."""


@dataclass(frozen=True)
class Project:
    name: str
    url: str
    api_key: str
    api_secret: str
    project_id: str = ""


def config_path() -> Path:
    """`$HOME/.livekit/cli-config.yaml`, where `lk` keeps it."""
    return Path.home() / ".livekit" / "cli-config.yaml"


def display_path(path: Path) -> str:
    """The path as the user thinks of it: `~/.livekit/cli-config.yaml`."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class CliConfig:
    """The loaded file: projects as plain values, and the YAML document to write back."""

    def __init__(self, path: Path, doc: CommentedMap, indent: tuple[int, int, int]) -> None:
        self.path = path
        self._doc = doc
        self._indent = indent

    # -- reading

    @property
    def default_project(self) -> str:
        return str(self._doc.get("default_project") or "")

    @property
    def projects(self) -> list[Project]:
        return [_project(entry) for entry in self._entries()]

    def find(self, name: str) -> Project | None:
        return next((p for p in self.projects if p.name == name), None)

    def default(self) -> Project | None:
        return self.find(self.default_project) if self.default_project else None

    # -- changing (in memory; `save` writes)

    def add(self, project: Project, make_default: bool) -> None:
        entry = CommentedMap()
        for key in PROJECT_FIELDS:
            entry[key] = getattr(project, key)
        entries = self._entries()
        entries.append(entry)
        self._doc["projects"] = entries
        if make_default or len(entries) == 1:
            self._doc["default_project"] = project.name

    def remove(self, name: str) -> None:
        entries = self._entries()
        for index in reversed(range(len(entries))):
            if entries[index].get("name") == name:
                del entries[index]
        if self.default_project == name:
            self._doc["default_project"] = ""

    def set_default(self, name: str) -> None:
        self._doc["default_project"] = name

    def _entries(self) -> CommentedSeq:
        entries = self._doc.get("projects")
        if entries is None:
            return CommentedSeq()
        return entries  # type: ignore[no-any-return]

    # -- writing

    def save(self) -> None:
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        text = StringIO()
        _yaml(self._indent).dump(self._doc, text)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".cli-config.", suffix=".tmp")
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text.getvalue())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load(path: Path | None = None) -> CliConfig:
    """The config file, or an empty one if there is none yet; `ConfigError` if it is unusable."""
    path = path or config_path()
    where = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CliConfig(path, CommentedMap(), LK_INDENT)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {where}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        doc = _yaml(LK_INDENT).load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(
            f"{where} is not valid YAML{at}; fix or move it (callboard will not overwrite it)"
        ) from None
    if doc is None:
        doc = CommentedMap()
    _check_shape(doc, where)
    return CliConfig(path, doc, _guess_indent(text))


def _check_shape(doc: Any, where: str) -> None:
    refuse = "; fix or move it (callboard will not overwrite it)"
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{where} is not a mapping like lk's config{refuse}")
    projects = doc.get("projects")
    if projects is not None and not isinstance(projects, CommentedSeq):
        raise ConfigError(f"{where}: `projects` is not a list{refuse}")
    for index, entry in enumerate(projects or []):
        if not isinstance(entry, CommentedMap):
            raise ConfigError(f"{where}: projects[{index}] is not a mapping{refuse}")
    if not isinstance(doc.get("default_project") or "", str):
        raise ConfigError(f"{where}: `default_project` is not a string{refuse}")


def _project(entry: CommentedMap) -> Project:
    def text(key: str) -> str:
        value = entry.get(key)
        return "" if value is None else str(value)

    return Project(text("name"), text("url"), text("api_key"), text("api_secret"),
                   text("project_id"))


def _yaml(indent: tuple[int, int, int]) -> YAML:
    yaml = YAML()  # round-trip: comments, order and unknown fields survive
    yaml.preserve_quotes = True
    mapping, sequence, offset = indent
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.width = 4096
    return yaml


def _guess_indent(text: str) -> tuple[int, int, int]:
    """Keep the file's own indentation, so a write does not reformat what it does not change."""
    try:
        _, sequence, offset = load_yaml_guess_indent(text)
    except YAMLError:
        return LK_INDENT
    if not sequence:
        return LK_INDENT
    offset = offset or 0
    mapping = offset if offset else sequence
    return (max(2, mapping), max(2, sequence), offset)
