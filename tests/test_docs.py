"""The README's configuration reference and set-up commands stay true."""

from pathlib import Path

from kanitts.config import _flatten, load_settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _documented(key: str) -> bool:
    parts = key.split(".")
    candidates = {key}
    if parts[0] == "languages" and len(parts) >= 3:
        candidates.add("languages.<code>." + ".".join(parts[2:3]))
    if parts[0] == "voice_aliases":
        candidates.add("voice_aliases.<openai voice>.<code>")
    if parts[:2] == ["long_form", "chars_per_second"]:
        candidates.add("long_form.chars_per_second")
    return any(f"`{c}`" in README for c in candidates)


def test_every_config_key_is_documented():
    keys = _flatten(load_settings(env=False).model_dump(mode="json"))
    missing = [k for k in keys if not _documented(k)]
    assert not missing, f"README configuration reference lacks: {missing}"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    line = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert line in README


def test_relative_links_in_the_docs_resolve():
    """Every relative Markdown link in README.md, the top-level docs and docs/ names a file
    or folder that exists, relative to the file that links it."""
    import re

    files = [*ROOT.glob("*.md"), *(ROOT / "docs").glob("*.md")]
    broken = []
    for md in files:
        for target in re.findall(r"\]\(([^)\s]+)\)", md.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = target.split("#", 1)[0]
            if path and not (md.parent / path).exists():
                broken.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not broken, broken
