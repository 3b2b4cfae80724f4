import pytest
import torch

from pokemon_classifier.models import preprocessing
from pokemon_classifier.presets import AUGMENTS, GameBoySprite, train_transform


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "efficientnet_lite0"])  # bilinear and bicubic
def test_train_transform_shapes(arch):
    pre = preprocessing(arch, 32)
    x = torch.randint(0, 255, (3, 37, 37), dtype=torch.uint8)
    for aug in AUGMENTS:
        for _ in range(20):  # random ops: exercise many draws
            y = train_transform(pre, aug)(x)
            assert y.shape == (3, 32, 32) and y.dtype == torch.float32


def test_presets_contain_what_they_say():
    pre = preprocessing("efficientnet_lite0", 32)
    names = {a: {type(t).__name__ for t in train_transform(pre, a).transforms} for a in ("light", "style", "strong")}
    assert "TrivialAugmentWide" not in names["light"] | names["style"] and "TrivialAugmentWide" in names["strong"]
    assert "LowRes" in names["style"] and "LowRes" not in names["light"]
    retro = {type(t).__name__ for t in train_transform(pre, "retro").transforms}
    assert retro == names["style"] | {"GameBoySprite"}


def test_lowres_makes_blocky_images():
    from pokemon_classifier.presets import LowRes

    torch.manual_seed(0)
    x = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)
    y = LowRes(p=1.0, low=24, high=24)(x)
    assert y.shape == x.shape and y.dtype == torch.uint8
    # 24 px of information left: neighbouring pixels are far more alike than in the noise it came from
    def roughness(t):
        return (t[:, :, 1:].float() - t[:, :, :-1].float()).abs().mean()
    assert roughness(y) < 0.5 * roughness(x)
    assert torch.equal(LowRes(p=0.0)(x), x)


def test_gameboy_sprite_is_grey_four_shades_and_blocky():
    from torchvision.transforms import InterpolationMode

    torch.manual_seed(0)
    x = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)
    y = GameBoySprite(p=1.0, colour=0.0, interpolation=InterpolationMode.NEAREST)(x)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])  # grey
    assert set(y.unique().tolist()) == {0, 96, 176, 255}  # all 4 shades, exactly (nearest keeps them)
    c = GameBoySprite(p=1.0, colour=1.0, interpolation=InterpolationMode.NEAREST)(x)
    assert not torch.equal(c[0], c[1]) and len(c.unique()) <= 5  # flat colours: 4 levels + outline black
    z = GameBoySprite(p=1.0, colour=0.0)(x)  # bicubic blow-up, as the cache does to real sprites
    assert torch.equal(z[0], z[2]) and len(z.unique()) > 4
    assert torch.equal(GameBoySprite(p=0.0)(x), x)


@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "efficientnet_lite0"])  # ImageNet and 0.5 normalisation
def test_eval_transform_normalises_exactly_like_torchvision_without_torch_threads(arch):
    """The picture path's last step is numpy (no intra-op threads per picture): same bits as
    T.ToDtype(scale=True) + T.Normalize."""
    from PIL import Image
    from torchvision.transforms import v2 as T

    from pokemon_classifier.presets import ScaleNormalize, eval_transform

    pre = preprocessing(arch, 64)
    assert isinstance(eval_transform(pre).transforms[-1], ScaleNormalize)
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 64, 64), (3, 73, 90)]:
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
        want = T.Normalize(pre["mean"], pre["std"])(T.ToDtype(torch.float32, scale=True)(x))
        got = ScaleNormalize(pre["mean"], pre["std"])(x[:, 1:, :])  # a crop: a strided view
        assert got.dtype == torch.float32 and torch.equal(got, want[:, 1:, :])
    img = Image.fromarray(torch.randint(0, 256, (90, 120, 3), dtype=torch.uint8, generator=g).numpy())
    old = T.Compose(eval_transform(pre).transforms[:-1] + [T.ToDtype(torch.float32, scale=True),
                                                          T.Normalize(pre["mean"], pre["std"])])
    assert torch.equal(eval_transform(pre)(img), old(img))
