import pytest
import torch

from pokemon_classifier.errors import UserError
from pokemon_classifier.models import build_model, load_checkpoint, preprocessing


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "efficientnet_lite1"])
def test_lite_offline_weights_classify_chelsea_as_a_cat(arch):
    """The remapped package weights must behave like ImageNet Lite: chelsea is a tabby/tiger/Persian cat."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from pokemon_classifier.presets import eval_transform

    model = build_model(arch, num_classes=1000, pretrained=True).eval()
    x = eval_transform(preprocessing(arch))(Image.fromarray(skimage_data.chelsea()))
    with torch.inference_mode():
        top = model(x[None]).softmax(1)[0].topk(3)
    assert 281 <= int(top.indices[0]) <= 285, top


def test_head_is_151_way():
    for arch in ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_lite0", "efficientnet_lite1"):
        m = build_model(arch)
        assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 151)


def test_offline_pretrained_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UserError) as e:
        build_model("mobilenet_v3_large", pretrained=True)
    msg = str(e.value)
    assert "--weights-file" in msg and "efficientnet_lite0" in msg and "\n" not in msg


def test_weights_file_hash_prefix_checked(tmp_path):
    import torchvision

    sd = torchvision.models.mobilenet_v3_small().state_dict()
    good = tmp_path / "w.pth"
    torch.save(sd, good)
    import hashlib

    h = hashlib.sha256(good.read_bytes()).hexdigest()
    named = tmp_path / f"mobilenet_v3_small-{h[:8]}.pth"
    good.rename(named)
    m = build_model("mobilenet_v3_small", weights_file=str(named))
    assert torch.equal(m.features[0][0].weight, sd["features.0.0.weight"])
    bad = tmp_path / "mobilenet_v3_small-deadbeef.pth"
    named.rename(bad)
    with pytest.raises(UserError, match="hash prefix"):
        build_model("mobilenet_v3_small", weights_file=str(bad))


def test_original_format_checkpoint_uses_first_151_logits(tmp_path):
    import torchvision

    net = torchvision.models.mobilenet_v3_large().eval()
    p = tmp_path / "best.pt"
    torch.save(net.state_dict(), p)
    model, meta = load_checkpoint(p)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), net(x)[:, :151])
    assert meta["format"] == "original" and meta["names"][121] == "Mr. Mime"


def test_pickled_objects_refused(tmp_path):
    import argparse

    p = tmp_path / "evil.pt"
    torch.save({"x": argparse.Namespace(a=1)}, p)  # any non-allowlisted class needs full unpickling
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(p)


def test_unknown_arch():
    with pytest.raises(UserError, match="unknown --arch"):
        preprocessing("resnet9000")
