"""HTML reports: files made, pages well formed, links relative and working, user text escaped."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from PIL import Image

from core.images import save_gif, save_png
from core.html_pages import MIN_DISPLAY_PX
from core.plots import plot_curves
from core.report import change_text, write_bake_report, write_batch_report, write_comparison_page

EVIL_PROMPT = '<script>alert("x")</script> & a "red" <b>cat</b>'
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class _Page(HTMLParser):
    """Walks a page: checks tags nest properly and collects tags, links and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag, **attrs) -> int:
        return sum(1 for name, found in self.tags
                   if name == tag and all(found.get(k) == v for k, v in attrs.items()))


def parse(page: Path) -> _Page:
    """Parse ``page``, check it is well nested and that every relative link points to a file."""
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == [], f"unclosed tags: {parser.open}"
    for tag, attrs in parser.tags:
        link = attrs.get("src") if tag == "img" else attrs.get("href") if tag == "a" else None
        if link is None:
            continue
        parsed = urlparse(link)
        # Offline reports: nothing external, nothing absolute.
        assert not parsed.scheme and not parsed.netloc and not link.startswith("/"), link
        assert (page.parent / unquote(parsed.path)).is_file(), f"broken link {link} in {page}"
    # No external CSS, scripts or fonts.
    assert parser.count("script") == 0 and parser.count("link") == 0
    return parser


def _images(count: int, size: int = 16) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, size, size, generator=generator) for _ in range(count)]


def _bake_report(directory: Path, prompt: str = EVIL_PROMPT, gif: bool = True) -> Path:
    stages = _images(3)
    gif_file = save_gif(stages, directory / "elsewhere", "render") if gif else None
    curve = [{"meta_step": step, "meta_loss": [1.0 - 0.1 * step, 0.9 - 0.1 * step],
              "grad_norm": [0.5, 0.4]} for step in range(5)]
    return write_bake_report(directory / "reports", prompt, stages, curve, baked_loss=0.61,
                             normal_loss=0.7, gif=gif_file, final_image=stages[-1],
                             metadata={"recipe": {"steps": 40, "note": "</pre><script>"}, "seed": 3})


def test_plot_curves_writes_a_real_png(tmp_path):
    file = plot_curves({"a": [3.0, 2.0, 1.5], "b": [2.5, float("nan"), 1.0]}, tmp_path / "p.png",
                       "title", "step", "loss")
    assert file == tmp_path / "p.png"
    assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert file.stat().st_size > 5_000  # axes, lines and labels, not an empty canvas
    with Image.open(file) as image:
        image.verify()
    # No data at all still gives a plot (a bake of zero meta steps), not an error.
    empty = plot_curves({"meta-loss": []}, tmp_path / "empty.png", "t", "x", "y")
    with Image.open(empty) as image:
        assert image.format == "PNG"


def test_bake_report_is_a_self_contained_folder(tmp_path):
    page = _bake_report(tmp_path)
    folder = page.parent
    assert page.name == "index.html" and folder.parent == tmp_path / "reports"
    names = {path.name for path in folder.iterdir()}
    assert {"index.html", "curve.png", "grad_norm.png", "final.png", "animation.gif",
            "stage-0.png", "stage-1.png", "stage-2.png"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    with Image.open(folder / "stage-0.png") as stage:
        assert min(stage.size) >= MIN_DISPLAY_PX  # 16 px enlarged so it can be seen
    parsed = parse(page)
    assert parsed.count("img") == 3 + 1 + 1 + 2  # stages, final, gif, two plots
    text = "".join(parsed.text)
    assert "baking paid off" in text and "-12.9%" in text
    assert '"steps": 40' in text  # the metadata block


def test_bake_report_escapes_the_prompt_and_metadata(tmp_path):
    page = _bake_report(tmp_path, gif=False)
    raw = page.read_text(encoding="utf-8")
    assert "<script" not in raw.lower() and "<b>cat" not in raw
    assert "&lt;script&gt;" in raw
    # The prompt comes back intact once the page is parsed (escaped, not mangled).
    text = "".join(parse(page).text)
    assert EVIL_PROMPT in text and "</pre><script>" in text


def test_bake_report_never_overwrites(tmp_path):
    first = _bake_report(tmp_path, prompt="a red cat", gif=False)
    before = first.read_bytes()
    second = _bake_report(tmp_path, prompt="a red cat", gif=False)
    assert first.parent.name == "a_red_cat" and second.parent.name == "a_red_cat-1"
    assert first.read_bytes() == before
    assert "baking" in second.read_text(encoding="utf-8")


def test_bake_report_with_float_losses_and_no_gradient_norm(tmp_path):
    curve = [{"meta_loss": 0.9}, {"meta_loss": 0.8}]
    page = write_bake_report(tmp_path, "a cat", _images(2), curve, 0.9, 0.8, None, None, {})
    assert not (page.parent / "grad_norm.png").exists()
    assert "baking did not pay off" in "".join(parse(page).text)


def test_bake_report_missing_gif_leaves_no_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_bake_report(tmp_path, "a cat", _images(1), [], 0.5, 0.6, tmp_path / "nope.gif", None, {})
    assert list(tmp_path.iterdir()) == []


def test_batch_report_rows_links_and_totals(tmp_path):
    report = _bake_report(tmp_path, prompt="a red cat", gif=False)
    entries = [
        {"prompt": "a red cat", "status": "baked", "baked_loss": 0.6, "normal_loss": 0.8,
         "seconds": 12.5, "report": report},
        {"prompt": EVIL_PROMPT, "status": "failed", "reason": "out of <memory>", "seconds": 1.0},
        {"prompt": "a blue dog", "status": "skipped", "reason": "already baked"},
    ]
    page = write_batch_report(tmp_path, entries)
    parsed = parse(page)  # the link to the bake report resolves relatively
    assert parsed.count("a") == 1
    link = next(attrs["href"] for tag, attrs in parsed.tags if tag == "a")
    assert link == "reports/a_red_cat/index.html"
    text = "".join(parsed.text)
    assert EVIL_PROMPT in text and "out of <memory>" in text
    assert "-25.0%" in text and "13.5" in text and "1 of 1 compared" in text
    assert "<memory>" not in page.read_text(encoding="utf-8")
    # A second batch page does not replace the first.
    again = write_batch_report(tmp_path, entries[:1])
    assert again != page and page.exists()


def test_comparison_page_is_a_table_of_methods(tmp_path):
    methods = ["normal", "baked", "<evil> method"]
    images_dir = tmp_path / "images"
    rows = []
    for prompt in ["a red cat", EVIL_PROMPT]:
        for seed in (0, 1):
            images, scores = {}, {}
            for index, method in enumerate(methods):
                if method == "<evil> method" and seed == 1:
                    continue  # a method that produced nothing for this row
                file = save_png(_images(1, size=8)[0], images_dir, f"m{index}")
                images[method] = file.relative_to(tmp_path).as_posix()
                scores[method] = {"judge": 0.25 + index, "custom score": seed}
            rows.append({"prompt": prompt, "seed": seed, "images": images, "scores": scores})
    rows[0]["images"]["baked"] = "images/deleted.png"  # missing file: text, not a broken image
    # An absolute path, and a name that is URL syntax unless quoted: both linked relatively.
    odd = save_png(_images(1, size=8)[0], images_dir, "with space #1?")
    rows[1]["images"]["normal"] = str(odd.resolve())
    summary = [{"method": m, "mean judge": 0.5, "win rate": 0.75, "oddly named <key>": i}
               for i, m in enumerate(methods)]

    page = write_comparison_page(tmp_path, "Eval <1>", methods, rows, summary)
    assert page == tmp_path / "index.html"
    parsed = parse(page)  # every image link resolves
    # two header rows, one per summary method, one per (prompt, seed)
    assert parsed.count("tr") == 2 + len(summary) + len(rows)
    assert parsed.count("tr", **{"class": "row"}) == len(rows)
    headers = parsed.text
    for column in ["prompt", *methods, "method", "mean judge", "win rate", "oddly named <key>"]:
        assert column in headers
    assert parsed.count("img") == len(rows) * len(methods) - 2 - 1  # two absent, one missing
    assert parsed.count("img", src="images/with%20space%20%231%3F.png") == 1
    text = "".join(parsed.text)
    assert "custom score: 1" in text and "judge: 1.25" in text
    assert "missing: images/deleted.png" in text and "no image" in text
    assert EVIL_PROMPT in text and "Eval <1>" in text
    with Image.open(images_dir / "m0.png") as image:
        width = image.width
    shown = next(attrs for tag, attrs in parsed.tags if tag == "img")
    assert int(shown["width"]) >= MIN_DISPLAY_PX > width
    # A second evaluation into the same folder keeps the first page.
    again = write_comparison_page(tmp_path, "Eval 2", methods, rows[:1], summary)
    assert again == tmp_path / "index-1.html" and "Eval &lt;1&gt;" in page.read_text(encoding="utf-8")


def test_evaluation_summary_reads_like_the_command_line(tmp_path):
    """The summary's keys as readable headers, its rates in percent as evaluate.py prints them."""
    summary = [{"method": "normal", "judge_mean": 36.03, "win_rate": None, "pixel_pass_rate": 0.92},
               {"method": "microwave", "judge_mean": 42.52, "win_rate": 0.5, "pixel_pass_rate": 0.9166}]
    page = write_comparison_page(tmp_path, "Eval", ["normal", "microwave"], [], summary)
    text = [piece for piece in parse(page).text if piece.strip()]
    first = text.index("method")
    assert text[first:first + 4] == ["method", "mean judge score", "wins over normal (prompts)", "pixel checks passed"]
    assert {"50 %", "92 %", "36.03", "42.52", "—"} <= set(text) and "0.5" not in text
    assert "judge_mean" not in page.read_text(encoding="utf-8")


def test_a_change_that_rounds_to_zero_has_no_sign(tmp_path):
    assert [change_text(value) for value in (-0.04, 0.04, 0.0, -12.34, 5)] == ["0.0%", "0.0%", "0.0%", "-12.3%",
                                                                               "+5.0%"]
    page = write_batch_report(tmp_path, [{"prompt": "a", "status": "baked", "baked_loss": 0.99996, "normal_loss": 1.0}])
    text = "".join(parse(page).text)
    assert "-0.0%" not in text and "0.0%" in text
