"""Control signals (issue #18): each map is deterministic, has the right shape and follows its
formula on images whose answer is known; a user's map folder is aligned by file name and every
misalignment is one line naming the file; maps travel with their images through subsets, batches
and flips, and are cached."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixdiff.data import ControlConfig, ImageSet, batches, compute_maps, load_dataset, with_control
from pixdiff.data import control as control_module
from pixdiff.data.control_signals import canny, edges, hysteresis, layout, mask, sketch


def square(n: int = 2) -> torch.Tensor:
    """uint8 (n, 3, 16, 16): black, a white square on rows and columns 4..11."""
    x = torch.zeros(n, 3, 16, 16, dtype=torch.uint8)
    x[..., 4:12, 4:12] = 255
    return x


def test_every_map_is_deterministic_and_shaped_like_its_image():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 12, 12), generator=g, dtype=torch.uint8)
    for kind, channels in (("edges", 1), ("sketch", 1), ("mask", 1), ("layout", 3)):
        first, again = compute_maps(images, kind), compute_maps(images.clone(), kind)
        assert first.dtype == torch.uint8 and first.shape == (5, channels, 12, 12)
        assert torch.equal(first, again), kind
    grey = images[:, :1]
    assert compute_maps(grey, "layout").shape == (5, 1, 12, 12)


def test_canny_traces_a_square_with_a_thin_closed_outline():
    """A white square on black: the edges are exactly its border pixels, one pixel wide (of
    the two pixels of equal gradient across a step, non-maximum suppression keeps one)."""
    e = canny(square())[0, 0]
    ring = torch.zeros(16, 16, dtype=torch.bool)
    ring[4:12, 4:12] = True
    ring[5:11, 5:11] = False
    assert torch.equal(e, ring)
    assert not canny(torch.full((1, 3, 16, 16), 77, dtype=torch.uint8)).any()  # flat: none


def test_weak_edges_survive_only_when_connected_to_strong_ones():
    """Hysteresis (Canny 1986): weak pixels 8-connected (diagonals too) to a strong one, through
    weak ones, are kept; a weak chain touching no strong pixel is not. And a faint step (its
    gradient between the two thresholds) on its own gives no edges."""
    weak = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    weak[0, 0, 0, 0:4] = True  # a chain with a strong end ...
    weak[0, 0, 1, 4] = weak[0, 0, 2, 5] = True  # ... going on diagonally
    weak[0, 0, 6, 1:6] = True  # a chain of its own
    strong = torch.zeros_like(weak)
    strong[0, 0, 0, 0] = True
    kept = hysteresis(weak, strong)
    assert torch.equal(kept[0, 0, :3], weak[0, 0, :3]) and not kept[0, 0, 3:].any()
    faint = torch.zeros(1, 1, 24, 24, dtype=torch.uint8)
    faint[..., :, 12:] = 45  # peak |grad L| 0.057: above CANNY_LOW, below CANNY_HIGH
    strong_step = faint * 4
    assert not canny(faint).any() and canny(strong_step)[0, 0, :, 11].all()


def test_sketch_is_the_blurred_edges_with_a_full_stroke_on_a_straight_line():
    x = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    x[..., :, 8:] = 255  # one vertical straight edge
    e, s = edges(x)[0, 0], sketch(x)[0, 0].int()
    column = int(e[8].nonzero()[0])
    assert (s[2:14, column] >= 250).all()  # the stroke's middle stays (near) white
    assert s[8, column - 1] > s[8, column - 3] > 0 and s[8, 0] == 0  # and fades away from it


def test_mask_from_alpha_or_from_the_border_colour():
    alpha = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    alpha[..., 2:6, 2:6] = 200
    assert torch.equal(mask(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), alpha), (alpha > 0) * 255)
    white = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    white[..., 3:5, 3:5] = torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)  # red
    white[..., 6, 6] = 240  # within MASK_THRESHOLD of the white background
    m = mask(white)[0, 0] > 0
    assert m.sum() == 4 and m[3:5, 3:5].all()
    fashion = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)  # Fashion-MNIST: black background
    fashion[..., 1:7, 2:6] = 90
    assert torch.equal(mask(fashion) > 0, fashion > 0)


def test_layout_is_the_area_mean_of_each_cell_upsampled():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (2, 3, 8, 8), generator=g, dtype=torch.uint8)
    out = layout(x, cells=2)
    for r, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        block = x[..., 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].double()
        mean = block.mean(dim=(-1, -2)).round().to(torch.uint8)  # (2, 3)
        cell = out[..., 4 * r : 4 * r + 4, 4 * c : 4 * c + 4]
        assert torch.equal(cell, mean[..., None, None].expand_as(cell))


def test_emoji_masks_are_their_alpha(tmp_path):
    data = load_dataset(
        "emoji", image_size=16, split="test", cache_dir=tmp_path,
        control=ControlConfig(kind="mask"),
    )  # fmt: skip
    assert data.control.shape == (len(data), 1, 16, 16)
    inside = data.control[:, 0] > 0
    white = (data.images == 255).all(dim=1)
    # the emoji's own white (eyes, teeth, ...) lies inside its silhouette, unlike a threshold's
    assert (inside & white).any() and not (~inside).all(dim=(1, 2)).any()


def test_maps_are_cached_and_read_back(tmp_path, monkeypatch):
    images = square(3)
    data = ImageSet(images, name="squares")
    cfg = ControlConfig(kind="edges")
    first = with_control(data, cfg, source="squares", cache_dir=tmp_path)
    assert list((tmp_path / "control").glob("edges-*.npz"))

    def fail(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(control_module, "compute_maps", fail)
    again = with_control(data, cfg, source="squares", cache_dir=tmp_path)
    assert torch.equal(first.control, again.control)
    assert torch.equal(first.control, edges(images))


def test_maps_follow_their_images_through_subsets_and_flipped_batches():
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (8, 3, 6, 6), generator=g, dtype=torch.uint8)
    data = ImageSet(images, control=images[:, :1].clone(), name="x")  # map = first channel
    assert torch.equal(data.subset(torch.tensor([3, 1]), name="s").control, images[[3, 1], :1])
    batch = next(batches(data, batch_size=8, flip=True, seed=3))
    assert torch.equal(batch.control, batch.images[:, :1])  # flipped together
    with pytest.raises(ValueError, match="control maps must be uint8"):
        ImageSet(images, control=images[:4], name="bad")


# ----------------------------------------------------------------------------- map folders


def write_folder(root, names, size=8, sizes=None):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        w, h = (sizes or {}).get(name, (size, size))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name)
    return root


def grey_maps(root, names, size=8):
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        path = (root / name).with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((size, size), 10 * i, dtype=np.uint8)).save(path)


def test_a_map_folder_is_aligned_by_file_name(tmp_path):
    names = ["a/0.png", "a/1.jpg", "b.png"]
    data_dir = write_folder(tmp_path / "data", names)
    grey_maps(tmp_path / "maps", names)
    data = load_dataset(
        str(data_dir), image_size=8, control=ControlConfig(kind=str(tmp_path / "maps"))
    )
    assert data.control.shape == (3, 1, 8, 8)
    assert data.control[:, 0, 0, 0].tolist() == [0, 10, 20]  # the images' sorted order


def test_metadata_conditioning_image_column(tmp_path):
    data_dir = write_folder(tmp_path / "data", ["0.png", "1.png"])
    grey_maps(data_dir / "cond", ["x.png", "y.png"])
    with (data_dir / "metadata.jsonl").open("w") as f:
        for image, cond in (("0.png", "cond/y.png"), ("1.png", "cond/x.png")):
            f.write(json.dumps({"file_name": image, "conditioning_image": cond}) + "\n")
    data = load_dataset(str(data_dir), image_size=8, control=ControlConfig(kind=str(data_dir)))
    assert data.control[:, 0, 0, 0].tolist() == [10, 0]


@pytest.mark.parametrize("case", ["missing", "left over", "shape", "column", "not a folder"])
def test_misaligned_maps_are_one_line_naming_the_file(tmp_path, case):
    names = ["0.png", "1.png"]
    data_dir = write_folder(tmp_path / "data", names)
    maps = tmp_path / "maps"
    grey_maps(maps, names)
    spec = str(data_dir)
    if case == "missing":
        (maps / "1.png").unlink()
        expected = f"no control map for image {data_dir / '1.png'}"
    elif case == "left over":
        grey_maps(maps, ["2.png"])
        expected = f"control map {maps / '2.png'} matches no image"
    elif case == "shape":
        Image.fromarray(np.zeros((8, 16), dtype=np.uint8)).save(maps / "1.png")
        expected = f"control map {maps / '1.png'} is 16x8, but its image"
    elif case == "column":
        (data_dir / "metadata.jsonl").write_text(
            json.dumps({"file_name": "0.png", "conditioning_image": "x.png"}) + "\n"
        )
        maps, expected = data_dir, f'no "conditioning_image" for image {data_dir / "1.png"}'
    else:
        spec, expected = "fashion-mnist", "a folder of maps needs a folder dataset"
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        load_dataset(spec, image_size=8, control=ControlConfig(kind=str(maps)))
    assert expected in str(err.value) and "\n" not in str(err.value)
