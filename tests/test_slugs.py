"""Tests for slugs (core.slugs): readable, safe file names for prompts that never collide."""

import random
import re
from pathlib import Path

import pytest

from core.errors import UserError
from core.slugs import slugify
from path_helpers import sha8

WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


def assert_safe_slug(slug: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9._-]+", slug), slug
    assert ".." not in slug
    assert not slug.startswith((".", "-"))
    assert not slug.endswith((".", " "))
    assert len(slug) <= 80
    assert slug.split(".")[0].upper() not in WINDOWS_RESERVED
    assert Path(slug).name == slug



def test_slug_plain_prompt_is_readable_transcription():
    assert slugify("a lemon") == "a_lemon"
    assert slugify("a b") == "a_b"
    assert slugify("3.5 apples-ish") == "3.5_apples-ish"


def test_slug_changed_text_gets_hash_of_full_prompt():
    assert slugify("a/b") == f"a_b-{sha8('a/b')}"
    assert slugify("A B") == f"A_B-{sha8('A B')}"
    assert slugify("more than everything, and less than nothing.") == (
        f"more_than_everything_and_less_than_nothing-{sha8('more than everything, and less than nothing.')}"
    )


@pytest.mark.parametrize(
    "prompt",
    [
        "../../etc/passwd", "a/b", "a\\b", "CON", "con", "nul.txt", "Com1", "lpt9.tar.gz", "aux",
        "a\0b", "x" * 500, "café au lait", "日本語", "...", "-rf", ".hidden", "trailing.",
        "trailing ", " leading", "a..b", "tab\there", "emoji 🍩", "a b-0123abcd", "\udc80",
    ],
)
def test_slug_is_safe(prompt):
    slug = slugify(prompt)
    assert_safe_slug(slug)
    assert slugify(prompt) == slug  # deterministic


def test_slug_examples():
    assert slugify("../../etc/passwd") == f"etc_passwd-{sha8('../../etc/passwd')}"
    assert slugify("CON") == f"_CON-{sha8('CON')}"
    assert slugify("nul.txt") == f"_nul.txt-{sha8('nul.txt')}"
    assert slugify("café au lait") == f"cafe_au_lait-{sha8('café au lait')}"
    assert slugify("日本語") == f"prompt-{sha8('日本語')}"
    assert slugify("a\0b") == f"a_b-{sha8('a' + chr(0) + 'b')}"
    long = slugify("x" * 500)
    assert len(long) == 79 and long.endswith(f"-{sha8('x' * 500)}")
    assert slugify("x" * 499 + "y") != long


def test_slug_collision_cases_differ_even_ignoring_case():
    prompts = ["a/b", "a_b", "a b", "A B", "a\\b", "a  b", "a b ", "a_b-" + sha8("a/b"), "A_B", "a-b"]
    slugs = [slugify(p) for p in prompts]
    assert len({s.casefold() for s in slugs}) == len(prompts)


def test_slug_looking_like_a_hash_is_hashed():
    assert slugify("a b-0123abcd") == f"a_b-0123abcd-{sha8('a b-0123abcd')}"


def test_slug_never_collides_on_random_prompts():
    rng = random.Random(0)
    alphabet = "aAb _/.-é\\"
    prompts = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(3000)}
    prompts = {p for p in prompts if p.strip()}
    slugs = {slugify(p).casefold() for p in prompts}
    assert len(slugs) == len(prompts)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_slug_of_empty_prompt_is_user_error(prompt):
    with pytest.raises(UserError, match="empty"):
        slugify(prompt)
