"""Model registry and checkpoints (smartaug/models/)."""

import pytest
import torch

import smartaug.models
from smartaug.models import ModelError, load_checkpoint, make_model, save_checkpoint

SHAPES = {"lenet5": (1, 28), "lenet5-wide": (1, 28), "resnet": (3, 32)}


@pytest.mark.parametrize("name", sorted(smartaug.models.MODELS))
def test_forward_features_head_and_checkpoint_round_trip(name, tmp_path):
    cin, size = SHAPES[name]
    torch.manual_seed(0)
    model = make_model(name, 10, cin, size)
    # one training step so BN running stats and weights are not at their init values
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(8, cin, size, size)
    torch.nn.functional.cross_entropy(model(x), torch.arange(8) % 10).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
    assert logits.shape == (8, 10)
    assert feats.shape == (8, model.head.in_features)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 10
    torch.testing.assert_close(model.head(feats), logits, rtol=0, atol=0)

    path = tmp_path / "m.pt"
    digest = save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert loaded.sha256 == digest and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), logits)


def test_lenet_shapes_and_sizes():
    m = make_model("lenet5", 10, 1, 28)
    assert m.head.in_features == 84
    w = make_model("lenet5-wide", 10, 1, 28)
    assert w.head.in_features == 64
    assert make_model("lenet5", 10, 3, 32)(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in make_model("resnet", 10, 3, 32).parameters()) == 4_935_242


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="valid: lenet5, lenet5-wide, resnet"):
        make_model("vgg", 10, 1, 28)
    m = make_model("lenet5", 10, 1, 28)
    with pytest.raises(ValueError, match=r"expected images \[N, 1, H, W\]"):
        m(torch.rand(2, 3, 28, 28))
    path = tmp_path / "m.pt"
    save_checkpoint(m, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        load_checkpoint(path)
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", sorted(smartaug.models.MODELS))
def test_fused_model_gives_the_same_features(name):
    from smartaug.models import fuse_for_inference

    cin, size = SHAPES[name]
    torch.manual_seed(1)
    model = make_model(name, 10, cin, size)
    model.train()
    with torch.no_grad():  # move the running stats away from their init values
        for _ in range(3):
            model(torch.rand(16, cin, size, size) * 2)
    model.eval()
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    x = torch.rand(8, cin, size, size)
    with torch.no_grad():
        torch.testing.assert_close(fused.features(x), model.features(x), rtol=1e-4, atol=1e-5)
    assert fused.spec == model.spec and model.training is False


def _mynets(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "from torch import nn\n"
        "def tiny(num_classes, in_channels):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), "
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), "
        "nn.Linear(16, num_classes))\n"
        "def nolinear():\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n"
        "def softmaxed(num_classes):\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), "
        "nn.Linear(8, num_classes), nn.Softmax(1))\n"
        "def raises(num_classes):\n"
        "    raise RuntimeError('no GPU for this one')\n"
        "def needs(num_classes, depth):\n"
        "    return tiny(num_classes, 1)\n"
        "class Pair(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = tiny(10, 1)\n"
        "    def forward(self, x):\n"
        "        return self.net(x), x\n"
        "def pair():\n"
        "    return Pair()\n"
        "def scaled():\n"  # the last Linear (7 outputs) is followed by another layer
        "    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), "
        "nn.Linear(8, 7), nn.Tanh())\n")
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("name", ["torchvision:resnet18", "torchvision:mobilenet_v3_small",
                                  "mynets:tiny", "timm:resnet18", "timm:vit_tiny_patch16_224"])
def test_your_model_on_the_features_head_protocol(name, tmp_path, monkeypatch):
    """A torchvision builder or your factory: the head is its last nn.Linear, the features its
    input; 1-channel images feed a 3-channel network; the checkpoint round-trips."""
    import torch

    from smartaug.core.hardness import hardness_scores
    from smartaug.models import load_checkpoint, make_model, save_checkpoint

    if name.startswith("timm:"):
        pytest.importorskip("timm", reason="the optional extra: pip install -e '.[timm]'")
    _mynets(tmp_path, monkeypatch)
    m = make_model(name, 10, 1, 28).eval()
    x = torch.rand(4, 1, 28, 28)
    f = m.features(x)
    assert f.ndim == 2 and m.head.in_features == f.shape[1] and m.head.out_features == 10
    assert torch.allclose(m(x), m.head(f))
    s = hardness_scores(m.head(f), f, m.head.weight, torch.tensor([0, 1, 2, 3]))
    assert ((s["avh"] > 0) & (s["avh"] < 1)).all()
    save_checkpoint(m, tmp_path / "m.pt")
    again = load_checkpoint(tmp_path / "m.pt", arch=name, trust=name)
    assert torch.equal(again(x), m(x))
    if name.startswith("mynets:"):  # your code is imported only when you name it
        with pytest.raises(ValueError, match="does not import code because a lake names it"):
            load_checkpoint(tmp_path / "m.pt", arch=name)
        monkeypatch.setenv("SMARTAUG_TRUST_MODELS", f"other:x, {name}")
        assert torch.equal(load_checkpoint(tmp_path / "m.pt")(x), m(x))
    with pytest.raises(ValueError, match="names model .* recorded 'lenet5'"):
        load_checkpoint(tmp_path / "m.pt", arch="lenet5")


def test_models_that_cannot_be_adapted(tmp_path, monkeypatch):
    import torch

    from smartaug.models import make_model
    from smartaug.models.external import load_weights

    _mynets(tmp_path, monkeypatch)
    for name, words in (("mynets:nolinear", "has no nn.Linear"),
                        ("mynets:softmaxed", "is not its final layer"),
                        ("mynets:scaled", "is not its final layer"),
                        ("mynets:raises", "raises.* raised RuntimeError: no GPU for this one"),
                        ("mynets:needs", "requires depth, which smartaug cannot give"),
                        ("mynets:pair", "its forward returns tuple, not a tensor"),
                        (".mynets:tiny", "absolute module path"),
                        ("mynets/tiny.py:tiny", "absolute module path"),
                        ("nomodule:factory", "cannot import module 'nomodule'"),
                        ("mynets:absent", "has no callable 'absent'"),
                        ("torchvision:nope", "no classification model 'nope'"),
                        ("vgg", "unknown model 'vgg'")):
        with pytest.raises(ValueError, match=words):
            make_model(name, 10, 1, 28)
    m = make_model("torchvision:resnet18", 10, 1, 28)
    state = {k: v for k, v in make_model("torchvision:resnet18", 5, 1, 28).body.state_dict()
             .items()}
    torch.save(state, tmp_path / "ok.pt")
    load_weights(m, tmp_path / "ok.pt")  # a backbone without the head: a new head
    assert torch.equal(m.body.conv1.weight, state["conv1.weight"])
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"'layer1.0.conv1.weight' has shape \(3, 3, 3, 3\)"):
        load_weights(m, tmp_path / "bad.pt")

    class Payload:
        def __reduce__(self):
            return (print, ("never",))

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused"):
        load_weights(m, tmp_path / "evil.pt")


def test_a_checkpoint_never_chooses_the_code_that_rebuilds_it(tmp_path, monkeypatch, capfd):
    """A spec rewritten to name any module:attr is refused before anything is imported or
    called (the weights' sha256 still holds); its arguments are checked against the model's."""
    import tempfile

    import torch

    from smartaug.models import load_checkpoint, make_model, save_checkpoint

    save_checkpoint(make_model("lenet5", 4, 1, 28), tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for name in ("tempfile:mkdtemp", "this:x", "os:system"):
        torch.save({**payload, "spec": {**payload["spec"], "name": name}}, tmp_path / "x.pt")
        with pytest.raises(ValueError, match=f"names model '{name}'.*does not import code"):
            load_checkpoint(tmp_path / "x.pt", arch=name)
    assert list(scratch.iterdir()) == [] and "Zen" not in capfd.readouterr().out
    assert "this" not in __import__("sys").modules
    for kwargs, words in (({"evil": 1}, "takes no argument 'evil'; valid: channels, hidden"),
                          ({"mean": "x"}, "mean = 'x' is not a list of numbers"),
                          ({"mean": [0.1, 0.2]}, "cannot be built")):
        torch.save({**payload, "spec": {**payload["spec"], "kwargs": kwargs}}, tmp_path / "k.pt")
        with pytest.raises(ValueError, match=words):
            load_checkpoint(tmp_path / "k.pt")
    torch.save({**payload, "spec": {**payload["spec"], "num_classes": "4"}}, tmp_path / "n.pt")
    with pytest.raises(ValueError, match="must be integers"):
        load_checkpoint(tmp_path / "n.pt")
    with pytest.raises(ValueError, match="takes no argument 'evil'"):
        make_model("lenet5", 4, 1, 28, evil=1)
