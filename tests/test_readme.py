"""The README and the docs pages it links stay true: the quickstart comes first (the two
commands, what `make run` prints, the walking-noise plot), every relative link resolves, the
layout map names paths that exist, and the Python example of docs/noise_and_models.md runs as
written."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: Markdown links and images: ``[text](target)`` / ``![alt](target)``.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _read(*parts):
    return open(os.path.join(ROOT, *parts), encoding="utf-8").read()


def _doc_pages():
    return sorted(name for name in os.listdir(DOCS) if name.endswith(".md"))


def _outside_code(text):
    """The text with fenced code blocks blanked out (links in code are not links)."""
    return re.sub(r"```.*?```", "", text, flags=re.S)


def _slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text):
    return {_slug(h) for h in re.findall(r"^#+ (.*)$", _outside_code(text), re.M)}


def _broken_links(page):
    """Relative links of one markdown file (repository-relative path) that do not resolve."""
    text = _read(page)
    broken = []
    for target in LINK.findall(_outside_code(text)):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        resolved = (os.path.join(ROOT, page) if not path
                    else os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)))
        if not os.path.exists(resolved):
            broken.append(f"{page}: {target} (no such file)")
        elif anchor and resolved.endswith(".md") and anchor not in _anchors(
                open(resolved, encoding="utf-8").read()):
            broken.append(f"{page}: {target} (no such heading)")
    return broken


def _first_screen():
    """The README up to its first ``## `` heading: the quickstart."""
    text = _read("README.md")
    return text.split("\n## ", 1)[0]


def test_readme_starts_with_the_two_commands():
    text = _read("README.md")
    first = re.search(r"```(\w*)\n(.*?)```", text, re.S)
    assert first, "README has no code block"
    assert text[:first.start()].strip() == "# walking-noise", "something before the commands"
    assert first.group(1) == "bash"
    commands = [line.split("#")[0].strip() for line in first.group(2).splitlines()]
    assert commands == ["make run", "make test"]


def test_readme_first_screen_is_the_quickstart():
    screen = _first_screen()
    blocks = re.findall(r"```(\w*)\n(.*?)```", screen, re.S)
    assert len(blocks) >= 2, "no output of `make run` on the first screen"
    output = blocks[1][1]
    # The σ_mid table of `make run`: one row per site of LeNet5-BN, named as the model names them.
    from models import build_model
    net = build_model({"model_class": "LeNet", "LeNet": {"conf_name": "LeNet5-BN"}},
                      {"default": {"noise_type": "NoNoise"}},
                      input_shape=(1, 28, 28), num_classes=10)
    names = [s.name for s in net.noise_sites]
    assert len(names) == 16
    for name in names:
        assert re.search(rf"(?<![\w:]){re.escape(name)}\b", output), f"site {name} not in the output"
    assert "σ_mid" in output
    assert "walking_noise.png" in output
    # ... and the walking-noise plot as a picture, small enough for a README.
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", screen)
    assert "docs/img/walking_noise.png" in images
    png = os.path.join(ROOT, "docs", "img", "walking_noise.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) < 200_000


def test_readme_links_every_docs_page_and_each_resolves():
    text = _outside_code(_read("README.md"))
    linked = {t.partition("#")[0] for t in LINK.findall(text) if t.startswith("docs/")}
    linked_pages = {t for t in linked if t.endswith(".md")}
    assert linked_pages, "README links no docs page"
    for page in linked_pages:
        assert os.path.isfile(os.path.join(ROOT, page)), f"README links {page}, which does not exist"
    # No orphan page: every page under docs/ is reachable from the README.
    assert {f"docs/{name}" for name in _doc_pages()} <= linked_pages
    assert _broken_links("README.md") == []


def test_docs_pages_links_resolve():
    broken = [b for name in _doc_pages() for b in _broken_links(f"docs/{name}")]
    assert broken == []


def test_readme_layout_map_names_existing_paths():
    text = _read("README.md")
    section = re.search(r"\n## Layout\n(.*?)(?=\n## |\Z)", text, re.S)
    assert section, "README has no layout map"
    rows = [line for line in section.group(1).splitlines() if line.startswith("| `")]
    named = [p for row in rows for p in re.findall(r"`([^`\s]+)`", row.split("|")[1])]
    assert named
    for path in named:
        assert os.path.exists(os.path.join(ROOT, path)), f"layout map names {path}: not in the tree"
    # Every package of the project is on the map.
    packages = sorted(d for d in os.listdir(ROOT)
                      if os.path.isfile(os.path.join(ROOT, d, "__init__.py")))
    assert {"noise", "models", "data", "util", "analysis"} <= set(packages)
    for package in packages:
        assert any(p.rstrip("/") == package or p.startswith(package + "/") for p in named), package


def test_python_example_runs():
    text = _read("docs", "noise_and_models.md")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/noise_and_models.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "docs/noise_and_models.md", "exec"), namespace)
    assert len(namespace["net"].noise_sites) == 16
    assert len(namespace["resnet"].noise_sites) == 60
