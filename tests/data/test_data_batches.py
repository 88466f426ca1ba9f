"""ImageSet, model-space conversion and the deterministic, sharded, resumable batches."""

from itertools import islice

import pytest
import torch

from pixdiff.data import (
    BatchPlan,
    ImageSet,
    batches,
    convert_channels,
    from_model_space,
    resize_images,
    to_model_space,
)


def numbered_set(n: int = 50) -> ImageSet:
    """Image i has value i at pixel (0, 0) and 255 at its right edge: flips are visible."""
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)
    images[:, 0, :, -1] = 255
    labels = torch.arange(n) % 7
    return ImageSet(images, labels, captions=[f"image {i}" for i in range(n)], name="numbered")


def ids(batch) -> list[int]:
    """Recover image ids from a batch (pixel (0,0), or (0,-1) when flipped)."""
    u8 = from_model_space(batch.images)[:, 0, 0]
    return [int(row[-1] if row[0] == 255 else row[0]) for row in u8]


def test_model_space_round_trip_and_clamp():
    u8 = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = to_model_space(u8)
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert torch.equal(from_model_space(x), u8)
    assert torch.equal(from_model_space(x.double() + 0.3 / 127.5), u8)  # rounds to nearest
    assert from_model_space(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]
    with pytest.raises(TypeError, match="expects uint8"):
        to_model_space(x)


def test_imageset_validates():
    with pytest.raises(ValueError, match="uint8 \\(N, C, H, W\\)"):
        ImageSet(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="labels must be int64 of shape \\(2,\\)"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), labels=torch.zeros(3).long())
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), captions=["a"])


def test_resize_and_channels():
    flat = torch.full((3, 1, 28, 28), 77, dtype=torch.uint8)
    assert (resize_images(flat, 32) == 77).all() and resize_images(flat, 32).shape[-1] == 32
    rgb = convert_channels(flat, 3)
    assert rgb.shape == (3, 3, 28, 28) and (convert_channels(rgb, 1) == 77).all()


def test_batches_are_deterministic_and_cover_each_epoch():
    data = numbered_set(50)
    first = [ids(b) for b in islice(batches(data, batch_size=8, seed=3), 12)]
    again = [ids(b) for b in islice(batches(data, batch_size=8, seed=3), 12)]
    other = [ids(b) for b in islice(batches(data, batch_size=8, seed=4), 12)]
    assert first == again and first != other
    epoch0, epoch1 = sum(first[:6], []), sum(first[6:], [])  # 50 // 8 = 6 steps per epoch
    assert len(set(epoch0)) == 48 and len(set(epoch1)) == 48 and epoch0 != epoch1


def test_batch_carries_labels_and_captions():
    data = numbered_set(50)
    batch = next(batches(data, batch_size=5, seed=1))
    assert batch.images.shape == (5, 1, 4, 4) and batch.images.dtype == torch.float32
    assert batch.labels.tolist() == [i % 7 for i in ids(batch)]
    assert batch.captions == [f"image {i}" for i in ids(batch)]


def test_ranks_get_disjoint_equal_shards():
    data = numbered_set(50)
    per_rank = []
    for rank in range(3):
        stream = batches(data, batch_size=4, seed=0, rank=rank, world_size=3)
        per_rank.append(sum((ids(b) for b in islice(stream, 4)), []))  # 50 // 3 // 4 = 4
    assert all(len(r) == 16 for r in per_rank)
    assert len(set().union(*per_rank)) == 48  # disjoint
    plan = BatchPlan(num_items=50, batch_size=4, world_size=3)
    shards = [BatchPlan(num_items=50, batch_size=4, world_size=3, rank=r).epoch_order(0)[0]
              for r in range(3)]  # fmt: skip
    assert plan.per_rank == 16 and len(set(torch.cat(shards).tolist())) == 48


@pytest.mark.parametrize("flip", [False, True])
def test_resume_mid_epoch_is_exact(flip):
    data = numbered_set(50)
    kwargs = dict(batch_size=6, seed=7, rank=1, world_size=2, flip=flip)
    full = list(islice(batches(data, **kwargs), 13))  # 25 // 6 = 4 steps/epoch: crosses 3
    resumed = list(islice(batches(data, start_step=6, **kwargs), 7))
    for a, b in zip(full[6:], resumed, strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    plan = BatchPlan(num_items=50, **kwargs)
    assert plan.locate(6) == (1, 2)
    index, _ = plan.batch(*plan.locate(6))
    assert ids(resumed[0]) == index.tolist()


def test_flip_mirrors_about_half():
    data = numbered_set(200)
    plan = BatchPlan(num_items=200, batch_size=200, seed=5, flip=True)
    index, flips = plan.batch(0, 0)
    batch = next(batches(data, batch_size=200, seed=5, flip=True))
    u8 = from_model_space(batch.images)
    assert torch.equal(u8[flips], data.images[index[flips]].flip(-1))
    assert torch.equal(u8[~flips], data.images[index[~flips]])
    assert 70 < int(flips.sum()) < 130
    assert not BatchPlan(num_items=200, batch_size=200, seed=5).batch(0, 0)[1].any()


def test_plan_errors():
    with pytest.raises(ValueError, match="cannot fill one batch of 8 on each of 4 rank"):
        BatchPlan(num_items=20, batch_size=8, world_size=4)
    with pytest.raises(ValueError, match="rank 2 is outside"):
        BatchPlan(num_items=20, batch_size=2, rank=2, world_size=2)
    assert BatchPlan(num_items=20, batch_size=8, drop_last=False).steps_per_epoch == 3
