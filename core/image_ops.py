"""Batched, twice-differentiable image operations that the toolkit is built from: windows by index
(`gather_windows`, `roll_images`), gaussian blur, border masks, resizing, affine resampling.

Images are `[N, C, H, W]`; every operation treats the whole batch in one call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gather_windows(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per-image pixel windows: `out[n, :, i, j] = images[n, :, rows[n, i], cols[n, j]]`.

    `rows` is `[N, h]`, `cols` `[N, w]` (long). Built from two `gather`s, so it is linear in the
    images and differentiable any number of times.
    """
    count, channels, height, width = images.shape
    row_index = rows[:, None, :, None].expand(count, channels, rows.shape[1], width)
    picked_rows = images.gather(2, row_index)
    col_index = cols[:, None, None, :].expand(count, channels, rows.shape[1], cols.shape[1])
    return picked_rows.gather(3, col_index)


def roll_images(images: torch.Tensor, shift_rows: torch.Tensor, shift_cols: torch.Tensor) -> torch.Tensor:
    """`torch.roll` with a different (wrap-around) shift per image; shifts are `[N]` integer tensors."""
    _, _, height, width = images.shape
    device = images.device
    rows = (torch.arange(height, device=device)[None, :] - shift_rows.to(device)[:, None]) % height
    cols = (torch.arange(width, device=device)[None, :] - shift_cols.to(device)[:, None]) % width
    return gather_windows(images, rows, cols)


def gaussian_kernel(kernel_size: int, sigma: float | None, device, dtype) -> torch.Tensor:
    """A normalised 1-D gaussian; sigma None picks the usual `0.3 * ((k - 1) / 2 - 1) + 0.8`."""
    if sigma is None or sigma <= 0:
        sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    positions = torch.arange(kernel_size, device=device, dtype=dtype) - (kernel_size - 1) / 2
    kernel = torch.exp(-positions**2 / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: float | None = None) -> torch.Tensor:
    """Separable gaussian blur with reflected borders; keeps the shape, twice differentiable."""
    _, channels, height, width = images.shape
    # Reflection padding needs the pad to be smaller than the side, and kernels must be odd.
    largest = 2 * min(height, width) - 1
    kernel_size = min(int(kernel_size), largest)
    if kernel_size % 2 == 0:
        kernel_size -= 1
    if kernel_size <= 1:
        return images
    kernel = gaussian_kernel(kernel_size, sigma, images.device, images.dtype)
    pad = kernel_size // 2
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    horizontal = kernel.view(1, 1, 1, kernel_size).expand(channels, 1, 1, kernel_size)
    vertical = kernel.view(1, 1, kernel_size, 1).expand(channels, 1, kernel_size, 1)
    blurred = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(blurred, vertical, groups=channels)


def border_mask(height: int, width: int, size: int, device=None) -> torch.Tensor:
    """`[H, W]` booleans: true within `size` pixels of an edge."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    near_row = (rows < size) | (rows >= height - size)
    near_col = (cols < size) | (cols >= width - size)
    return near_row[:, None] | near_col[None, :]


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to `size x size`: area averaging when shrinking (no aliasing), bilinear when growing."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    if height >= size and width >= size:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def pixel_linear_to_theta(linear: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A linear map in pixel units `[N, 2, 2]` expressed in grid_sample's normalised coordinates."""
    # Normalised x spans width pixels and y height pixels, so rotations must be conjugated by the
    # aspect ratio to stay rotations (not shears) on non-square images.
    scale = linear.new_tensor([width / 2, height / 2])
    return linear * scale[None, None, :] / scale[None, :, None]


def affine_sample(images: torch.Tensor, theta: torch.Tensor, size: tuple[int, int], padding: str) -> torch.Tensor:
    """One `affine_grid` + `grid_sample` for the whole batch; `theta` maps output to input coordinates."""
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], *size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def rotation_matrices(angles_degrees: torch.Tensor) -> torch.Tensor:
    """`[N, 2, 2]` rotations by angles in degrees `[N]`."""
    radians = angles_degrees * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
