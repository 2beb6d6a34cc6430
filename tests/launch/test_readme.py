"""README's top block holds exactly the two set-up-and-go commands, and CI runs the second."""

from pathlib import Path

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
