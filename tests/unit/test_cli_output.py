"""Output rules: colour and spinner only on a terminal; piped tables keep their full width."""

from __future__ import annotations

import io

import pytest

from callboard.cli import output


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_piped_tables_are_plain_and_unwrapped(capsys: pytest.CaptureFixture[str]) -> None:
    long_id = "AW_" + "x" * 150
    output.table("workers", ["id", "status"], [(long_id, "available")])
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    assert any(long_id in line and "available" in line for line in out.splitlines())


def test_a_terminal_gets_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    fake = FakeTerminal()
    monkeypatch.setattr("sys.stdout", fake)
    output.console().print("[red]alert[/red]")
    assert "\x1b[" in fake.getvalue()


def test_no_color_is_respected_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    fake = FakeTerminal()
    monkeypatch.setattr("sys.stdout", fake)
    output.console().print("[red]alert[/red]")
    assert "\x1b[31" not in fake.getvalue()


def test_no_spinner_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with output.spinner("waiting"):
        pass
    assert capsys.readouterr().err == ""


def test_a_spinner_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTerminal()
    monkeypatch.setattr("sys.stderr", fake)
    with output.spinner("waiting for the server"):
        pass
    assert "waiting for the server" in fake.getvalue()


def test_errors_are_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        output.fail("server said no", 1)
    assert info.value.code == 1
    assert capsys.readouterr() == ("", "error: server said no\n")


def test_json_lines_are_compact(capsys: pytest.CaptureFixture[str]) -> None:
    output.emit_json_line({"b": 1, "a": [1, 2]})
    assert capsys.readouterr().out == '{"a":[1,2],"b":1}\n'
