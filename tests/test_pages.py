"""Every HTML page the scripts write, opened in a real headless browser (Chromium).

Each page is made by running the scripts as a user does (tiny model, tiny settings), then opened from
disk (a file:// URL, so relative links resolve as they do for a user). Checked per page: every <img>
loaded, the page has its title and heading, a screenshot of it is not blank, and every page it links
to opens too. Screenshots are kept in the test's tmp directory. Skipped, with the reason, only where
no Chromium is installed (.ci/run installs Debian's).

To add a page: one more ``Page(...)`` line in ``PAGES``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from browser import Browser, PageView, browser_names, find_browser
from conftest import run_script

pytestmark = pytest.mark.slow

TINY = ["--model", "tiny", "--device", "cpu", "--quiet", "--size", "32", "--cutn", "1"]
BAKE = [*TINY, "--stages", "2", "--steps-per-stage", "2", "--meta-steps", "1", "--eval-starts", "1"]
# prompts.txt, written into every page's directory before its scripts run
PROMPTS = "a red circle on the left\na blue square on the right\n"
# A screenshot is blank if under this share of its pixels differs from the most common colour (the
# background). Measured: the batch page (text and tables only) 5.5 %, the pages with images about 40 %.
MIN_INK = 0.02


@dataclass(frozen=True)
class Page:
    name: str
    runs: tuple[tuple[str, ...], ...]  # (script, *arguments), run in order in a fresh directory
    path: str  # the page they write, relative to that directory
    title: str  # the page's <title> and its <h1> start with this
    min_images: int  # the page shows at least this many images (and every one must load)


PAGES = [
    Page("bake report", (("bake.py", "a red circle", *BAKE),), "outputs/reports/a_red_circle/index.html",
         "Bake report: a red circle", 6),  # 2 stages, the final image, the GIF, 2 plots
    Page("batch page", (("batch_bake.py", "prompts.txt", *BAKE),), "outputs/reports/batch.html",
         "Batch bake", 0),  # a table, linking to the 2 bake reports (opened and checked too)
    Page("evaluation page", (("evaluate.py", "prompts.txt", *BAKE, "--judge", "scenes-judge", "--seeds", "1",
                              "--k", "1"),), "outputs/evaluation/index.html",
         "normal vs microwave vs auto_microwave", 6),  # 2 prompts x 3 methods
    Page("gallery", (("batch_bake.py", "prompts.txt", *BAKE), ("store.py", "gallery", *TINY)),
         "outputs/gallery/index.html", "Gallery: baked", 2),  # 2 paths replayed, linking to their 2 bake reports
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = find_browser()
    if executable is None:
        pytest.skip(f"no Chromium to open the HTML pages in: none of {', '.join(browser_names())} found "
                    "(.ci/run installs Debian's chromium with apt-get; $CHROMIUM names another browser)")
    with Browser(executable, tmp_path_factory.mktemp("browser")) as started:
        yield started


def ink(screenshot: Path) -> tuple[int, float]:
    """The number of colours in a screenshot and the share of its pixels not of the most common one."""
    with Image.open(screenshot) as image:
        rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=rgb.width * rgb.height)
    background = max(colours)[0]
    return len(colours), 1 - background / (rgb.width * rgb.height)


def check_page(view: PageView, title: str, min_images: int) -> None:
    """Assert that a page opened in the browser shows what it should; the message says what is wrong."""
    broken = view.broken_images()
    assert not broken, f"{view.url}: images that did not load: {broken}"
    assert len(view.images) >= min_images, f"{view.url}: {len(view.images)} images, expected {min_images} or more"
    colours, share = ink(view.screenshot)
    assert colours > 1 and share >= MIN_INK, (f"{view.url} looks blank: {colours} colours, {share:.1%} of the "
                                              f"pixels not background (screenshot {view.screenshot})")
    assert view.title.startswith(title), f"{view.url}: title {view.title!r}, expected {title!r}"
    assert view.heading.startswith(title), f"{view.url}: heading {view.heading!r}, expected {title!r}"


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_page_opens_in_a_browser(page, browser, tmp_path):
    (tmp_path / "prompts.txt").write_text(PROMPTS)
    for script, *args in page.runs:
        result = run_script(script, *args, cwd=tmp_path)
        assert result.returncode == 0, f"{script} failed:\n{result.stderr[-2000:]}"
    file = tmp_path / page.path
    assert file.is_file(), f"{page.name}: no {page.path}; made: {sorted(p.name for p in file.parent.glob('*'))}"
    stem = re.sub(r"\W+", "-", page.name)
    view = browser.view(file.as_uri(), tmp_path / f"{stem}.png")
    check_page(view, page.title, page.min_images)
    # The pages it links to (bake reports from the batch page, the GIF) open and show their images.
    for number, link in enumerate(view.links):
        assert link.startswith("file:"), f"{page.name} links outside its folder: {link}"
        linked = browser.view(link, tmp_path / f"{stem}-link-{number}.png")
        assert not linked.broken_images(), f"{link} (linked from {page.name}): images that did not load: " \
                                           f"{linked.broken_images()}"


def test_broken_and_blank_pages_are_caught(browser, tmp_path):
    """The checks can fail: a missing and a corrupt image are named, a blank page is called blank."""
    Image.new("RGB", (8, 8), (200, 30, 30)).resize((64, 64)).save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"not a PNG at all")
    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><title>Broken</title><h1>Broken</h1><img src="good.png">'
                      '<img src="missing.png"><img src="corrupt.png">')
    view = browser.view(broken.as_uri(), tmp_path / "broken.png")
    assert view.broken_images() == ["missing.png", "corrupt.png"]
    with pytest.raises(AssertionError, match=r"did not load: \['missing.png', 'corrupt.png'\]"):
        check_page(view, "Broken", 1)

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><title>Blank</title><body></body>")
    view = browser.view(blank.as_uri(), tmp_path / "blank.png")
    assert ink(view.screenshot) == (1, 0.0)
    with pytest.raises(AssertionError, match="looks blank"):
        check_page(view, "Blank", 0)

    # A page with one heading and nothing else is under the bar too (a report that lost its content).
    bare = tmp_path / "bare.html"
    bare.write_text("<!DOCTYPE html><title>Bare</title><h1>Bare</h1>")
    with pytest.raises(AssertionError, match="looks blank"):
        check_page(browser.view(bare.as_uri(), tmp_path / "bare.png"), "Bare", 0)
