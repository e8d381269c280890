"""README.md fits a screen's reading (issue 81): at most 8,000 bytes, the two commands first with `make test` as its
test command, and every document it points to there (what it moved out lives in docs/)."""

import re

from testkit import REPO

README = REPO / "README.md"


def test_the_readme_is_short_and_says_the_two_commands():
    text = README.read_text()
    assert len(text.encode()) <= 8000
    block = text[text.index("## The two commands") :]
    assert "make study   # the default study, end to end" in block and "make test    # the test suite" in block


def test_every_document_the_readme_links_exists():
    links = re.findall(r"\]\((docs/[^)#]+)", README.read_text())
    assert links and [link for link in links if not (REPO / link).is_file()] == []
