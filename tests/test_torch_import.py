"""PyTorch import through torch.fx, and the same models through torch.onnx.export and ONNX import:
our forward equals torch's (float64), node names are torchvision's module names."""

from __future__ import annotations

import builtins
import os
import warnings

import numpy as np
import pytest

from lrp_num.errors import GraphError, LRPError, MissingDependencyError, UnsupportedLayerError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from lrp_num.engine.graph import Graph  # noqa: E402
from lrp_num.layers import (Add, AdaptiveAvgPool2d, AvgPool2d, ChannelAffine, Concat, Conv2d,  # noqa: E402
                            Dense, Dropout, Flatten, MaxPool2d, SumPool2d)
from lrp_num.io.torch_architectures import resnet18, vgg11_bn  # noqa: E402
from lrp_num.io.torch_import import from_torch_module  # noqa: E402

RNG = np.random.default_rng(11)


def torch_forward(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.tensor(x)).numpy()


def randomise_batch_norms(module, seed: int = 3):
    """Random running statistics and affine parameters (fresh batch norms are the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = sub.num_features
                sub.weight.copy_(0.5 + torch.rand(n, generator=generator))
                sub.bias.copy_(0.2 * torch.randn(n, generator=generator))
                sub.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                sub.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return module.eval().double()


class SmallResidual(nn.Module):
    """Every supported module and function once: grouped convolution without bias, `+=`,
    torch.add, torch.cat, padded and ceil-mode pools, sum pooling, adaptive pooling, a batch norm
    after a Linear and one after an addition (not foldable), view(x.size(0), -1), F.relu."""

    def __init__(self, sum_pool: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8))
        self.post = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.sum = nn.AvgPool2d(2, divisor_override=1) if sum_pool else nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d((2, 2))
        self.drop, self.id = nn.Dropout(0.3), nn.Identity()
        self.fc, self.bn, self.out = nn.Linear(16 * 2 * 2, 6), nn.BatchNorm1d(6), nn.Linear(6, 4)

    def forward(self, x):
        x = self.stem(x)
        y = self.branch(x)
        y += x
        y = F.relu(self.post(y))
        a, b = self.pool(y), self.avg(y)
        z = torch.cat([a, torch.add(b, a)], 1)
        z = self.gap(self.id(self.sum(z)))
        z = self.drop(z.view(z.size(0), -1))
        return self.out(torch.relu(self.bn(self.fc(z))))


class Wrap(nn.Module):
    def __init__(self, forward, **modules) -> None:
        super().__init__()
        self._forward = forward
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, x):
        return self._forward(self, x)


@pytest.fixture(scope="module")
def resnet():
    model = resnet18(num_classes=10).double()
    return model, from_torch_module(model, (3, 32, 32))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = randomise_batch_norms(SmallResidual())
    return model, from_torch_module(model, (3, 16, 16))


def kinds(graph: Graph) -> dict[type, int]:
    counts: dict[type, int] = {}
    for node in graph.nodes:
        counts[type(node.operation)] = counts.get(type(node.operation), 0) + 1
    return counts


def test_resnet18_forward_folds_and_names(resnet):
    model, graph = resnet
    x = RNG.standard_normal((2, 3, 32, 32))
    np.testing.assert_allclose(graph.forward(x), torch_forward(model, x), rtol=1e-10, atol=1e-12)
    assert len(graph.folded) == 20  # every BatchNorm of ResNet-18 follows its convolution
    assert kinds(graph)[Add] == 8 and kinds(graph)[Conv2d] == 20 and ChannelAffine not in kinds(graph)
    assert graph.folded["layer2.0.downsample.1"] == "layer2.0.downsample.0"
    assert graph.node("layer1.0.add").inputs == ("layer1.0.conv2", "maxpool")
    assert graph.node("layer2.0.add").inputs == ("layer2.0.conv2", "layer2.0.downsample.0")
    assert graph.node("layer1.0.relu@1").inputs == ("layer1.0.add",)  # the block's relu, called twice
    assert graph.node("fc").inputs == ("flatten",) and isinstance(graph.node("fc").operation, Dense)
    np.testing.assert_array_equal(graph.node("fc").operation.weight, model.fc.weight.detach().numpy().T)
    assert graph.output == "fc" and graph.output_shape == (10,)


@pytest.mark.parametrize("full", [
    False,
    pytest.param(True, marks=pytest.mark.skipif(
        not os.environ.get("LRP_FULL_MODELS"), reason="torchvision's full-size VGG-11-BN classifier takes "
        "about a minute here (800 MB of float64 weights copied); set LRP_FULL_MODELS=1")),
])
def test_vgg11_bn(full):
    """VGG-11-BN module for module as torchvision builds it, on a 32x32 input (the adaptive
    pooling spreads the 1x1 feature map to 7x7); routinely with a 256-wide classifier, with
    torchvision's 4096-wide one and 1000 classes (about 130 million parameters) on request."""
    model = (vgg11_bn() if full else vgg11_bn(num_classes=10, hidden=256)).double()
    graph = from_torch_module(model, (3, 32, 32))
    x = RNG.standard_normal((1, 3, 32, 32))
    np.testing.assert_allclose(graph.forward(x), torch_forward(model, x), rtol=1e-9, atol=1e-12)
    counts = kinds(graph)
    assert len(graph.folded) == 8 and counts[Conv2d] == 8 and counts[MaxPool2d] == 5
    assert counts[Dense] == 3 and counts[Dropout] == 2 and counts[AdaptiveAvgPool2d] == 1
    assert graph.node("classifier.0").operation.weight.shape == (25088, 4096 if full else 256)
    assert graph.node("classifier.6").inputs == ("classifier.5",)
    assert graph.output_shape == ((1000,) if full else (10,))


def test_small_residual_net_every_supported_operation(small):
    model, graph = small
    x = RNG.standard_normal((3, 3, 16, 16))
    np.testing.assert_allclose(graph.forward(x), torch_forward(model, x), rtol=1e-10, atol=1e-12)
    names = {node.name: node for node in graph.nodes}
    assert isinstance(names["post"].operation, ChannelAffine)  # after an addition: not foldable
    assert names["add"].inputs == ("branch.0", "stem.2") and isinstance(names["add"].operation, Add)
    assert names["add@1"].inputs == ("avg", "pool")
    assert isinstance(names["cat"].operation, Concat) and names["cat"].inputs == ("pool", "add@1")
    sources = {node.name: node.operation for node in graph.source_nodes}
    assert names["branch.0"].operation.groups == 4 and not sources["stem.0"].bias.any()  # bias=False
    assert type(names["sum"].operation) is SumPool2d
    pool, avg = names["pool"].operation, names["avg"].operation
    assert pool.ceil_mode and pool.padding == (1, 1) and isinstance(avg, AvgPool2d) and not avg.count_include_pad
    assert isinstance(names["view"].operation, Flatten)
    assert graph.folded == {"stem.1": "stem.0", "branch.1": "branch.0", "bn": "fc"}


def test_eval_function_of_a_module_in_training_mode():
    """The graph is the inference function: running statistics, dropout off."""
    torch.manual_seed(1)
    model = randomise_batch_norms(SmallResidual()).train()
    graph = from_torch_module(model, (3, 16, 16))
    x = RNG.standard_normal((4, 3, 16, 16))
    np.testing.assert_allclose(graph.forward(x), torch_forward(model.eval(), x), rtol=1e-10, atol=1e-12)


def test_explain_runs_on_an_imported_resnet(resnet):
    from lrp_num import explain

    _, graph = resnet
    x = RNG.standard_normal((1, 3, 32, 32))
    relevance = explain(graph, x, "epsilon", target=3)
    assert relevance.shape == x.shape and np.isfinite(relevance).all()


@pytest.mark.parametrize(
    ("model", "shape", "layer"),
    [
        (Wrap(lambda s, x: s.conv(x), conv=nn.Conv2d(2, 3, (3, 5), padding="same")), (2, 5, 6), Conv2d),
        (Wrap(lambda s, x: s.conv(x), conv=nn.Conv2d(2, 3, 3, stride=2, padding="valid")), (2, 7, 6), Conv2d),
        (Wrap(lambda s, x: s.pool(x), pool=nn.AdaptiveAvgPool2d((None, 2))), (2, 3, 5), AdaptiveAvgPool2d),
        (Wrap(lambda s, x: s.pool(x), pool=nn.MaxPool2d((2, 3))), (1, 4, 7), MaxPool2d),
        (Wrap(lambda s, x: s.flat(x), flat=nn.Flatten()), (2, 3), Flatten),
        (Wrap(lambda s, x: x.reshape(-1, 6)), (2, 3), Flatten),
        (Wrap(lambda s, x: torch.flatten(x, start_dim=1)), (2, 3), Flatten),
        (Wrap(lambda s, x: s.drop(x).flatten(1), drop=nn.Dropout2d()), (2, 3, 2), Flatten),
    ],
)
def test_module_and_function_variants(model, shape, layer):
    model = model.double().eval()
    graph = from_torch_module(model, shape)
    x = RNG.standard_normal((2, *shape))
    np.testing.assert_allclose(graph.forward(x), torch_forward(model, x), rtol=1e-12, atol=1e-12)
    assert type(graph.node(graph.output).operation) is layer


def test_in_place_operations_change_what_later_nodes_read():
    """As in torch: y.add_(x) changes y for the output, relu_(y) for the sum after it."""
    def forward(s, x):
        y = s.a(x)
        y += s.b(x)
        y.add_(x)
        z = s.relu(y)
        return z + y

    model = Wrap(forward, a=nn.Linear(3, 3), b=nn.Linear(3, 3), relu=nn.ReLU(inplace=True)).double()
    graph = from_torch_module(model, (3,))
    x = RNG.standard_normal((4, 3))
    np.testing.assert_allclose(graph.forward(x), torch_forward(model, x), rtol=1e-12, atol=1e-12)
    assert graph.node("add@1").inputs == ("relu", "relu")
    assert [node.name for node in graph.nodes if isinstance(node.operation, Add)] == ["add", "add_", "add@1"]


# ---- the same models through torch.onnx.export ----

def export_onnx(model, shape, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation warning
        torch.onnx.export(model, (torch.zeros(1, *shape, dtype=torch.float64),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return str(path)


@pytest.mark.parametrize("name", ["resnet18", "vgg11_bn", "small"])
def test_torch_onnx_export_imports_with_the_same_forward(tmp_path, resnet, name):
    pytest.importorskip("onnx")
    from lrp_num.io.onnx_import import load_onnx

    if name == "resnet18":
        model, shape = resnet[0], (3, 32, 32)
    elif name == "vgg11_bn":  # the exporter needs adaptive pooling onto a divisor of its input
        model, shape = vgg11_bn(num_classes=10, hidden=64, pooled=1).double(), (3, 32, 32)
    else:  # the exporter drops AvgPool2d's divisor_override: average pooling here
        torch.manual_seed(2)
        model, shape = randomise_batch_norms(SmallResidual(sum_pool=False)), (3, 16, 16)
    network = load_onnx(export_onnx(model, shape, tmp_path / f"{name}.onnx"))
    x = RNG.standard_normal((2, *shape))
    np.testing.assert_allclose(network.forward(x), torch_forward(model, x), rtol=1e-10, atol=1e-12)
    if name == "resnet18":
        assert isinstance(network, Graph) and kinds(network)[Add] == 8
        assert "/layer1/layer1.0/conv1/Conv" in {node.name for node in network.nodes}
    if name == "small":  # x.view(x.size(0), -1) exported as Shape/Gather/Unsqueeze/Concat/Reshape
        assert kinds(network)[Flatten] == 1 and kinds(network)[Concat] == 1


# ---- what is refused: one line naming the fx node ----

@pytest.mark.parametrize(
    ("model", "message"),
    [
        (Wrap(lambda s, x: s.act(s.fc(x)), fc=nn.Linear(4, 4), act=nn.ELU()),
         "fx node 'act' calls module 'act' (ELU), which is not supported"),
        (Wrap(lambda s, x: torch.erf(s.fc(x)), fc=nn.Linear(4, 4)),
         "fx node 'erf' calls the function torch.erf, which is not supported"),
        (Wrap(lambda s, x: s.fc(x).mean(1, keepdim=True), fc=nn.Linear(4, 4)),
         "fx node 'mean' calls the method mean, which is not supported"),
        (Wrap(lambda s, x: s.fc(x) * 2, fc=nn.Linear(4, 4)),
         "fx node 'mul' (operator.mul): scaling by a number anywhere but right after a matrix product"),
        (Wrap(lambda s, x: s.fc(x) + 1.0, fc=nn.Linear(4, 4)),
         "fx node 'add' (operator.add): adding 1.0 that is not a tensor of the model is not supported"),
        (Wrap(lambda s, x: s.fc(x.view(2, -1)), fc=nn.Linear(8, 4)),
         "fx node 'view' (view): view to (2, -1)"),
        (Wrap(lambda s, x: torch.cat([s.fc(x), x], 0), fc=nn.Linear(4, 4)),
         "fx node 'cat' (torch.cat): concatenating along the batch axis (dim=0) is not supported"),
        (Wrap(lambda s, x: s.relu(x.flatten(1)) + x.flatten(1), relu=nn.ReLU(inplace=True)),
         "fx node 'relu' (relu): changing 'x' in place through the view 'flatten' while 'flatten_1' reads it "
         "later is not supported"),
        (Wrap(lambda s, x: s.pool(x).flatten(1), pool=nn.MaxPool2d(2, dilation=2)),
         "fx node 'pool' (pool): MaxPool2d with dilation=2 is not supported"),
        (Wrap(lambda s, x: s.norm(x), norm=nn.BatchNorm1d(4, track_running_stats=False)),
         "fx node 'norm' (norm): a batch norm without running statistics"),
        (Wrap(lambda s, x: s.fc(x) + s.bias, fc=nn.Linear(4, 4), bias=nn.Parameter(torch.ones(4))),
         "fx node 'bias' (bias): a parameter or buffer used outside its module is not supported"),
        (Wrap(lambda s, x: s.fc(x) if x.sum() > 0 else x, fc=nn.Linear(4, 4)),
         "torch.fx cannot trace Wrap: "),
    ],
)
def test_unsupported_modules_and_functions_name_the_node(model, message):
    with pytest.raises(UnsupportedLayerError) as info:
        from_torch_module(model, (4,))
    text = str(info.value)
    assert message in text and "\n" not in text


def test_addends_of_different_shapes_are_a_graph_error():
    model = Wrap(lambda s, x: s.a(x) + s.b(x), a=nn.Linear(4, 3), b=nn.Linear(4, 2))
    with pytest.raises(GraphError, match="fx node 'add' \\(operator.add\\): Add needs addends of one shape"):
        from_torch_module(model, (4,))


def test_missing_torch_is_one_line(monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("no torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(MissingDependencyError) as info:
        from_torch_module(object(), (4,))
    assert isinstance(info.value, LRPError) and "needs PyTorch" in str(info.value)
    assert "\n" not in str(info.value)
