"""The documentation site's promises: every Python snippet in its pages runs as written, and
every public name of ``neuralode.ode`` (what the API reference shows) has a docstring. The site
itself is built by ``make docs`` (``mkdocs build --strict``), which CI runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: The site's own pages; docs/results/ holds generated artefacts, not prose with snippets.
PAGES = sorted(p for p in DOCS.rglob("*.md") if "results" not in p.relative_to(DOCS).parts)
SNIPPETS = [(page, i, code) for page in PAGES
            for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M))]


def test_the_site_has_pages_with_snippets():
    assert {"index.md", "getting-started.md", "ode.md", "experiments.md", "paper.md", "distributed.md"} <= {
        p.name for p in PAGES}
    assert len(SNIPPETS) >= 4


@pytest.mark.parametrize("page, index, code", SNIPPETS,
                         ids=[f"{p.relative_to(DOCS)}#{i}" for p, i, _ in SNIPPETS])
def test_every_python_snippet_in_the_docs_runs(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a snippet that writes files writes them here
    exec(compile(code, f"{page.name} snippet {index}", "exec"), {"__name__": "__docs__"})


def test_every_public_name_of_the_ode_core_has_a_docstring():
    import neuralode.ode as ode

    missing = []
    for name in ode.__all__:
        value = getattr(ode, name)
        if (inspect.isclass(value) or inspect.isfunction(value)) and not (value.__doc__ or "").strip():
            missing.append(name)
    assert not missing, f"public names of neuralode.ode without a docstring: {missing}"
