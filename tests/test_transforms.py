"""The transforms (core.transforms): the registry, every transform's shape, determinism and exactness, view
order, double backward, parsing and help."""

import pytest
import torch

from core.constraints import CONSTRAINTS
from core.errors import UserError
from core.postproc import POSTPROC
from core.schedule import Ramp
from core.image_ops import roll_images
from core.transforms import TRANSFORMS, build_chain


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def numbered_images(count: int = 2, side: int = 6) -> torch.Tensor:
    """Images whose every value is distinct, so any rearrangement shows."""
    return torch.arange(count * 3 * side * side, dtype=torch.float32).view(count, 3, side, side)


def run_chain(config, images, seed=0, out_size=None, n_views=1, progress=0.0):
    chain = build_chain(config, out_size or images.shape[-1])
    return chain(images, progress, seeded(seed), n_views)


# ---------------------------------------------------------------- transforms

# name -> (config item, output side for a 16 px input, whether it is random)
TRANSFORM_CASES = {
    "noise": ({"noise": 0.1}, 16, True),
    "random_shift": ({"random_shift": "0 1"}, 16, True),
    "random_rotate": ({"random_rotate": {"degree": "-30 30", "center": "0.3 0.7"}}, 16, True),
    "random_scale": ({"random_scale": "0.5 1.5"}, 16, True),
    "random_crop": ({"random_crop": 10}, 10, True),
    "center_crop": ({"center_crop": 8}, 8, False),
    "repeat": ({"repeat": 3}, 48, False),
    "mul": ({"mul": 0.2}, 16, False),
    "blur": ({"blur": "5 1.0"}, 16, False),
    "flip": ({"flip": 0.5}, 16, True),
    "cutouts": ({"cutouts": {"scale": "0.5 1"}}, 12, True),
}


def test_every_transform_has_a_case():
    assert sorted(TRANSFORM_CASES) == TRANSFORMS.names()


@pytest.mark.parametrize("name", sorted(TRANSFORM_CASES))
def test_transform_shape_and_determinism(name):
    item, side, random = TRANSFORM_CASES[name]
    images = torch.rand(3, 3, 16, 16, generator=seeded(99))
    # Applied without the final resize (cutouts samples straight to the out size, 12 here).
    chain = build_chain([item], out_size=12 if name == "cutouts" else side)
    first = chain(images, 0.0, seeded(1), 4)
    again = chain(images, 0.0, seeded(1), 4)
    other = chain(images, 0.0, seeded(2), 4)
    assert first.shape == (12, 3, side, side)
    assert torch.equal(first, again)
    assert (not torch.equal(first, other)) == random


def test_views_of_image_i_are_consecutive_rows():
    images = numbered_images(count=3)
    views = run_chain([], images, n_views=4)
    assert views.shape == (12, 3, 6, 6)
    for index in range(12):
        assert torch.equal(views[index], images[index // 4])


@pytest.mark.parametrize("config", [None, [item for item, _, _ in TRANSFORM_CASES.values()]])
def test_views_of_an_image_do_not_depend_on_its_batch(config):
    # Prompts rendered together must get the same views as when rendered alone.
    images = torch.rand(3, 3, 16, 16, generator=seeded(11))
    chain = build_chain(config, 12)
    together = chain(images, 0.5, seeded(12), 4)
    alone = chain(images[1:2], 0.5, seeded(12), 4)
    assert torch.allclose(together[4:8], alone, atol=1e-6)
    assert not torch.allclose(together[4], together[5])


def test_random_shift_with_known_shift_equals_torch_roll():
    images = numbered_images(count=2, side=8)
    views = run_chain([{"random_shift": [0.25, 0.25]}], images)
    assert torch.equal(views, torch.roll(images, shifts=(2, 2), dims=(2, 3)))


def test_roll_images_uses_a_shift_per_image():
    images = numbered_images(count=2, side=5)
    rolled = roll_images(images, torch.tensor([1, -2]), torch.tensor([3, 0]))
    assert torch.equal(rolled[0], torch.roll(images[0], shifts=(1, 3), dims=(1, 2)))
    assert torch.equal(rolled[1], torch.roll(images[1], shifts=(-2, 0), dims=(1, 2)))


def test_center_crop_and_repeat_are_exact():
    image = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    cropped = run_chain([{"center_crop": 2}], image, out_size=2)
    assert cropped[0, 0].tolist() == [[5.0, 6.0], [9.0, 10.0]]
    small = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    tiled = run_chain([{"repeat": 2}], small, out_size=4)
    assert tiled[0, 0].tolist() == [[1, 2, 1, 2], [3, 4, 3, 4], [1, 2, 1, 2], [3, 4, 3, 4]]
    # A float size is a multiple of the input side: one tile back after repeat.
    back = run_chain([{"repeat": 3}, {"center_crop": 1.0}], small, out_size=2)
    assert torch.equal(back, small)


def test_random_crop_takes_a_window_of_the_image():
    images = numbered_images(count=1, side=8)
    views = run_chain([{"random_crop": 3}], images, out_size=3, n_views=5)
    for view in views:
        top, left = divmod(int(view[0, 0, 0].item()), 8)
        assert torch.equal(view, images[0, :, top: top + 3, left: left + 3])


def test_rotation_by_90_degrees_is_rot90():
    images = numbered_images(count=2, side=6)
    views = run_chain([{"random_rotate": {"degree": [90, 90], "center": [0.5, 0.5]}}], images)
    assert torch.allclose(views, torch.rot90(images, 1, dims=(2, 3)), atol=1e-3)


def test_mul_and_flip_are_exact():
    images = torch.rand(2, 3, 4, 4, generator=seeded(5))
    assert torch.allclose(run_chain([{"mul": {"factor": 0.2}}], images), 0.5 + (images - 0.5) * 0.2)
    assert torch.equal(run_chain([{"flip": 1.0}], images), images.flip(-1))
    assert torch.equal(run_chain([{"flip": 0.0}], images), images)


def test_whole_cutouts_without_jitter_show_the_image():
    images = torch.rand(2, 3, 8, 8, generator=seeded(3))
    plain = {"cutouts": {"whole": 1, "degree": "0 0", "shear": "0 0", "flip": 0, "noise": 0}}
    views = run_chain([plain], images, n_views=3)
    assert torch.allclose(views, images.repeat_interleave(3, dim=0), atol=1e-5)


def test_chain_resizes_to_out_size():
    images = torch.rand(1, 3, 16, 16, generator=seeded(4))
    assert run_chain([], images, out_size=8).shape == (1, 3, 8, 8)
    assert run_chain([], images, out_size=24).shape == (1, 3, 24, 24)


def test_scheduled_transform_is_skipped_outside_its_window():
    images = torch.rand(1, 3, 8, 8, generator=seeded(6))
    config = [{"mul": 0.0, "start": "50%", "end": 0.8}]
    assert torch.equal(run_chain(config, images, progress=0.2), images)
    assert torch.equal(run_chain(config, images, progress=0.9), images)
    assert torch.allclose(run_chain(config, images, progress=0.6), torch.full_like(images, 0.5))


def test_ramp_parameter_moves_with_progress():
    images = torch.ones(1, 3, 4, 4)
    config = [{"mul": {"factor": [1.0, 0.0], "center": 0.0}}]
    assert torch.allclose(run_chain(config, images, progress=0.25), torch.full_like(images, 0.75))


def double_backward_gradient(chain, out_size):
    """d/d(scale) of |d loss / d pixels|^2, with `scale` entering before the chain."""
    scale = torch.tensor(1.3, requires_grad=True)
    raw = torch.randn(2, 3, 16, 16, generator=seeded(7), requires_grad=True)
    images = torch.sigmoid(raw * scale)
    views = chain(images, 0.3, seeded(8), 4)
    weights = torch.randn(views.shape, generator=seeded(9))
    loss = (views * weights).sum().pow(2) + views.pow(3).sum()
    (pixel_grad,) = torch.autograd.grad(loss, raw, create_graph=True)
    (scale_grad,) = torch.autograd.grad(pixel_grad.pow(2).sum(), scale)
    return scale_grad


def test_double_backward_through_the_default_chain():
    gradient = double_backward_gradient(build_chain(None, 12), 12)
    assert torch.isfinite(gradient) and gradient.abs() > 0


def test_double_backward_through_every_transform():
    config = [{"repeat": 3}, TRANSFORM_CASES["random_rotate"][0], {"center_crop": 1.0}]
    config += [TRANSFORM_CASES[name][0] for name in
               ("random_scale", "random_shift", "random_crop", "mul", "blur", "flip", "noise", "cutouts")]
    assert sorted(next(iter(item)) for item in config) == TRANSFORMS.names()
    gradient = double_backward_gradient(build_chain(config, 12), 12)
    assert torch.isfinite(gradient) and gradient.abs() > 0


def test_unknown_transform_or_parameter_names_the_valid_ones():
    with pytest.raises(UserError, match="unknown transform 'nois'; valid: blur, center_crop"):
        build_chain([{"nois": 0.1}], 8)
    with pytest.raises(UserError, match="unknown parameter 'sigma'; valid: std"):
        build_chain([{"noise": {"sigma": 0.1}}], 8)
    with pytest.raises(UserError, match="expects 2 numbers"):
        build_chain([{"random_rotate": {"degree": "1 2 3"}}], 8)
    with pytest.raises(UserError, match="exactly one transform"):
        build_chain([{"noise": 0.1, "flip": 0.5}], 8)
    with pytest.raises(UserError, match="larger than the image"):
        run_chain([{"center_crop": 9}], torch.rand(1, 3, 8, 8))


def test_lists_parse_from_yaml_lists_and_strings():
    spellings = ["0.3 0.7", "0.3, 0.7", "0.3,0.7", [0.3, 0.7], ["0.3", "0.7"]]
    parsed = [TRANSFORMS.configure({"random_rotate": {"center": spelling}}).values["center"]
              for spelling in spellings]
    assert parsed == [(0.3, 0.7)] * len(spellings)
    noise = TRANSFORMS.configure({"noise": "0.1 0.2 0.3"}).values["std"]
    assert noise == (0.1, 0.2, 0.3)
    assert TRANSFORMS.configure({"noise": [0.12, 0.02]}).values["std"] == Ramp((0.12,), (0.02,))
    assert TRANSFORMS.configure({"blur": "5 1.5"}).values == {"kernel_size": 5, "sigma": 1.5}
    assert TRANSFORMS.configure("flip").values == {"probability": 0.5}


def test_help_text_has_one_line_per_entry():
    for registry in (TRANSFORMS, CONSTRAINTS, POSTPROC):
        lines = registry.help_text().splitlines()
        assert [line.split("(")[0] for line in lines] == registry.names()


def test_default_views_never_mirror():
    """A mirrored view would teach "on the left" as "on the right": the default chain keeps sides
    (a bare `cutouts` entry, whose flip chance is 0.5, does not)."""
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0, :, :16] = 1.0  # red in the left half only

    def mirrored_views(config) -> int:
        views = build_chain(config, 16)(image, 0.0, torch.Generator().manual_seed(0), 64)
        red = views[:, 0]
        return int((red[..., 8:].mean(dim=(1, 2)) > red[..., :8].mean(dim=(1, 2)) + 0.05).sum())

    assert mirrored_views(None) == 0
    assert mirrored_views(["cutouts"]) > 10
