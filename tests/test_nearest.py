"""Tests for the embedding cache and nearest search over a store (core.nearest)."""

import math
import os

import pytest
import torch

from core.errors import UserError
from core.nearest import nearest_paths, prompt_embeddings
from core.slugs import slugify
from core.store import save_path
from path_helpers import make_path, write_legacy


class FakeEncoder:
    """Counts calls; embeds a prompt as a fixed vector, or one derived from its characters."""

    def __init__(self, table=None, dim=4):
        self.calls: list[list[str]] = []
        self.table = table or {}
        self.dim = dim

    def __call__(self, prompts):
        self.calls.append(list(prompts))
        rows = []
        for prompt in prompts:
            if prompt in self.table:
                rows.append(torch.tensor(self.table[prompt], dtype=torch.float32))
            else:
                codes = [ord(c) for c in prompt]
                rows.append(torch.tensor([len(prompt), sum(codes) % 97, max(codes), 1.0][: self.dim]))
        return torch.stack(rows)


def test_embeddings_encoded_once_and_cached(tmp_path):
    write_legacy(tmp_path, "old one", dim=4)
    write_legacy(tmp_path, "old two", dim=4)
    own = make_path(prompt="own", model="fake")
    save_path(tmp_path, own)
    save_path(tmp_path, make_path(prompt="foreign", model="other"))
    encoder = FakeEncoder()

    paths, embeddings = prompt_embeddings(tmp_path, "fake", encoder)
    assert [p.prompt for p in paths] == ["foreign", "old one", "old two", "own"]
    # One batch; our own file of this model is not encoded, the other model's file is.
    assert encoder.calls == [["foreign", "old one", "old two"]]
    assert embeddings.shape == (4, 4)
    assert torch.equal(embeddings[3], own.prompt_embedding)
    assert torch.equal(embeddings[:3], FakeEncoder()(["foreign", "old one", "old two"]))
    assert (tmp_path / ".cache" / "embeddings-fake.pt").is_file()

    paths2, embeddings2 = prompt_embeddings(tmp_path, "fake", encoder)
    assert len(encoder.calls) == 1  # the second call encodes nothing
    assert torch.equal(embeddings2, embeddings)

    write_legacy(tmp_path, "old three", dim=4)
    prompt_embeddings(tmp_path, "fake", encoder)
    assert encoder.calls[1:] == [["old three"]]

    later = os.stat(tmp_path / "old_one.pt").st_mtime_ns + 5_000_000_000
    os.utime(tmp_path / "old_one.pt", ns=(later, later))
    prompt_embeddings(tmp_path, "fake", encoder)
    assert encoder.calls[2:] == [["old one"]]

    (tmp_path / "old_two.pt").unlink()
    paths, _ = prompt_embeddings(tmp_path, "fake", encoder)
    assert len(encoder.calls) == 3
    cache = torch.load(tmp_path / ".cache" / "embeddings-fake.pt", weights_only=True)
    assert sorted(cache["entries"]) == ["foreign.pt", "old_one.pt", "old_three.pt"]


def test_embedding_cache_is_per_model_and_survives_corruption(tmp_path):
    write_legacy(tmp_path, "old one", dim=4)
    encoder = FakeEncoder()
    prompt_embeddings(tmp_path, "ViT-B/32", encoder)
    prompt_embeddings(tmp_path, "tiny", encoder)
    assert len(encoder.calls) == 2
    cache_file = tmp_path / ".cache" / f"embeddings-{slugify('ViT-B/32')}.pt"
    assert cache_file.is_file()
    cache_file.write_bytes(b"junk")
    prompt_embeddings(tmp_path, "ViT-B/32", encoder)
    assert encoder.calls[2:] == [["old one"]]


def test_embeddings_of_empty_store(tmp_path):
    encoder = FakeEncoder()
    paths, embeddings = prompt_embeddings(tmp_path, "fake", encoder)
    assert paths == [] and embeddings.shape == (0, 0) and encoder.calls == []


# ----------------------------------------------------------------------------- nearest


@pytest.fixture
def nearest_store(tmp_path):
    for prompt, embedding in [
        ("same", [2.0, 0, 0]),
        ("near", [1.0, 1.0, 0]),
        ("ortho", [0, 0, 5.0]),
        ("opposite", [-1.0, 0, 0]),
    ]:
        path = make_path(prompt=prompt, dim=3, model="fake")
        path.prompt_embedding = torch.tensor(embedding)
        save_path(tmp_path, path)
    write_legacy(tmp_path, "legacy one", dim=3)
    write_legacy(tmp_path, "too wide", dim=5)  # guides of another model size: never returned
    encoder = FakeEncoder({"legacy one": [0, 1.0, 0], "too wide": [1.0, 0, 0]}, dim=3)
    return tmp_path, encoder


def test_nearest_ordering_and_distances(nearest_store):
    store_dir, encoder = nearest_store
    found = nearest_paths(store_dir, "fake", encoder, torch.tensor([3.0, 0, 0]), k=10)
    assert [p.prompt for p, _ in found] == ["same", "near", "legacy one", "ortho", "opposite"]
    distances = [d for _, d in found]
    expected = [0.0, math.pi**2 / 32, math.pi**2 / 8, math.pi**2 / 8, math.pi**2 / 2]
    assert distances == pytest.approx(expected, abs=1e-5)
    assert encoder.calls == [["legacy one"]]  # the path of another size is skipped (with a warning), not encoded


def test_nearest_excludes_and_limits(nearest_store):
    store_dir, encoder = nearest_store
    found = nearest_paths(store_dir, "fake", encoder, torch.tensor([3.0, 0, 0]), k=2, exclude_prompts=("same",))
    assert [p.prompt for p, _ in found] == ["near", "legacy one"]


def test_nearest_with_nothing_left(nearest_store, tmp_path_factory):
    store_dir, encoder = nearest_store
    everything = ["same", "near", "ortho", "opposite", "legacy one"]
    with pytest.raises(UserError, match="no baked paths"):
        nearest_paths(store_dir, "fake", encoder, torch.tensor([1.0, 0, 0]), k=3, exclude_prompts=everything)
    with pytest.raises(UserError, match="no baked paths"):
        nearest_paths(tmp_path_factory.mktemp("empty"), "fake", encoder, torch.tensor([1.0, 0, 0]), k=3)
    with pytest.raises(UserError, match="at least 1"):
        nearest_paths(store_dir, "fake", encoder, torch.tensor([1.0, 0, 0]), k=0)
