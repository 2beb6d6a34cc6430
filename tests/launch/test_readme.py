"""README's top block holds exactly the two set-up-and-go commands, and CI runs the second; every
documented launch command composes."""

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parents[2]


def _top_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    commands = _top_commands()
    assert len(commands) == 2
    assert "framework.launch" in commands[0]
    assert "pytest" in commands[1]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines


def _launch_commands(text: str) -> list[str]:
    """Every `python -m framework.launch` command of the document's bash blocks, its continuation
    lines joined (the commands elided with `...` excepted); `<placeholders>` are the reader's to fill."""
    commands = []
    for block in text.split("```bash\n")[1:]:
        joined = block.split("```", 1)[0].replace("\\\n", " ")
        for line in joined.splitlines():
            start = line.find("python -m framework.launch")
            if start >= 0 and " ... " not in line:
                commands.append(line[start:])
    return commands


def _first_choice(override: str) -> str:
    """A sweep override (`key=a,b`) as its first choice; any other unchanged."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return override
    return f"{parsed.get_key_element()}={next(iter(parsed.sweep_string_iterator()))}"


@pytest.mark.parametrize("document", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))])
def test_every_documented_launch_command_composes(document):
    """A user copies these lines: each must compose (its overrides name real keys), so a renamed
    key or an override Hydra cannot parse fails here rather than in a user's shell."""
    path = ROOT / document if document == "README.md" else ROOT / "docs" / document
    for command in _launch_commands(path.read_text()):
        words = shlex.split(re.sub(r"<[^<>]*>", "PLACEHOLDER", command), comments=True)[3:]  # after `python -m framework.launch`
        overrides = [_first_choice(word) for word in words if word not in ("-m", "--multirun", "--cfg", "job")]
        try:
            compose_config(overrides)
        except Exception as error:  # noqa: BLE001 - the message names the command
            pytest.fail(f"{document}: {command!r} does not compose: {error}")


def _config_table_rows() -> dict[str, str]:
    """README's config-tree table: each row's backticked group names -> the row's options cell."""
    section = (ROOT / "README.md").read_text().split("## The config tree", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) >= 4 and "`" in cells[1]:
            for group in re.findall(r"`([\w.<>]+)`", cells[1]):
                rows[group] = cells[2]
    return rows


@pytest.mark.parametrize("group", sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir() and p.name != "hydra"))
def test_readme_config_table_names_every_option_of_the_group(group):
    """A new experiment, prior or representation is listed where users look for the choices."""
    options = _config_table_rows()[group]
    missing = [p.stem for p in sorted((ROOT / "conf" / group).glob("*.yaml")) if f"`{p.stem}`" not in options and f"/{p.stem}`" not in options and f"`{p.stem}/" not in options and f"/{p.stem}/" not in options]
    assert not missing, f"README's config table omits conf/{group}: {missing}"
