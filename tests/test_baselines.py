"""Baselines: random / CURL / ratio / Practise criteria, fine-tuners, TENT / EATA.

Each test checks the defining behaviour of one baseline on a small model (resnet18 at 32 px with
random weights, or a tiny BatchNorm net), so the whole file runs in seconds.
"""

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.data.transforms import normalise
from edgeprune.distill.distiller import DistillConfig
from edgeprune.models import zoo
from edgeprune.models.blocks import find_blocks
from edgeprune.models.features import extract_features
from edgeprune.models.staging import split
from edgeprune.models.surgery import remove_blocks
from edgeprune.pruning.criteria import CRITERIA, ScoringContext
from edgeprune.research import tta
from edgeprune.research.finetuners import FINETUNERS, FinetuneResult

RES = 32
USELESS = "layer2.1"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from intra-op threads, and OpenMP spinning on shared cores is slow.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model, entry, _ = zoo.load_model("resnet18", weights="random")
    return model, entry, find_blocks(model, entry, torch.zeros(1, 3, RES, RES))


def _useless_copy(model):
    """A copy whose block USELESS has a zero residual branch: relu(0 + x) = x for x >= 0."""
    m = copy.deepcopy(model)
    bn = m.get_submodule(USELESS).bn2
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()
    return m


def _ctx(model, entry, blocks, stages=True, n=8, **kw):
    x = torch.randn(n, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    ls = {b.name: 0.05 for b in blocks}
    return ScoringContext(model, entry, blocks, x, ls, split(model, entry.staging) if stages else None, **kw)


class _Calls:
    """Counts forward calls (and images) of a module through a forward pre-hook."""

    def __init__(self, module):
        self.calls = self.images = 0
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, _m, args):
        self.calls += 1
        self.images += args[0].shape[0]


def test_registries_name_the_baselines():
    assert {"ttmpd", "random", "curl", "ratio", "practise"} <= set(CRITERIA.names())
    assert FINETUNERS.names() == ["continuous", "entropy", "mir", "stored"]


# ---------------------------------------------------------------- criteria
def test_random_is_seeded_and_free(resnet):
    model, entry, blocks = resnet
    calls = _Calls(model)
    a = CRITERIA.get("random")().score(_ctx(model, entry, blocks, seed=3))
    b = CRITERIA.get("random")().score(_ctx(model, entry, blocks, seed=3))
    c = CRITERIA.get("random")().score(_ctx(model, entry, blocks, seed=4))
    calls.handle.remove()
    assert a.scores == b.scores != c.scores and set(a.scores) == {bl.name for bl in blocks}
    assert a.forward_equivalents == 0.0 and calls.calls == 0


def test_ratio_uses_one_forward_and_ranks_identity_block_first(resnet):
    model, entry, blocks = resnet
    model = _useless_copy(model)
    ctx = _ctx(model, entry, blocks, batch_size=8)
    calls = _Calls(model)
    res = CRITERIA.get("ratio")().score(ctx)
    calls.handle.remove()
    assert calls.calls == 1 and res.forward_equivalents == 1.0
    assert min(res.scores, key=res.scores.get) == USELESS and res.scores[USELESS] < 1e-6
    # one block by hand: E_x ||out - in|| / ||in||
    block, name = model.get_submodule("layer3.1"), "layer3.1"
    seen = {}
    h = block.register_forward_hook(lambda _m, i, o: seen.update(i=i[0], o=o))
    with torch.no_grad():
        model(ctx.images)
    h.remove()
    direct = ((seen["o"] - seen["i"]).flatten(1).norm(dim=1) / seen["i"].flatten(1).norm(dim=1)).mean()
    assert res.scores[name] == pytest.approx(float(direct), rel=1e-5)
    assert res.teacher_features.shape == (8, 512, 1, 1)


@pytest.mark.parametrize("stages", [True, False])
def test_curl_equals_direct_kl(resnet, stages):
    model, entry, blocks = resnet
    ctx = _ctx(model, entry, blocks, stages=stages, batch_size=4)
    res = CRITERIA.get("curl")().score(ctx)
    name = "layer3.1"
    with torch.no_grad():
        log_p = F.log_softmax(model(ctx.images).double(), 1)
        log_q = F.log_softmax(remove_blocks(model, [name])(ctx.images).double(), 1)
    direct = float((log_q.exp() * (log_q - log_p)).sum(1).mean())
    assert res.scores[name] == pytest.approx(direct, rel=1e-4, abs=1e-9)
    assert all(v >= 0 for v in res.scores.values())
    if stages:  # cached prefixes + the model's own head: cheaper than one full pass per block
        assert any("cached prefixes" in n for n in res.notes)
        assert 1.0 < res.forward_equivalents < 1 + len(blocks)
    else:
        assert res.forward_equivalents == 1 + len(blocks)


@pytest.mark.parametrize("stages", [True, False])
def test_practise_trains_only_adaptors_and_finds_useless_block(resnet, stages):
    model, entry, blocks = resnet
    model = _useless_copy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = _ctx(model, entry, blocks, stages=stages, batch_size=4, steps=3)
    res = CRITERIA.get("practise")().score(ctx)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers untouched
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert min(res.scores, key=res.scores.get) == USELESS
    assert res.details[USELESS]["recoverability"] < 1e-6 < min(
        d["recoverability"] for n, d in res.details.items() if n != USELESS)
    for n, d in res.details.items():
        assert res.scores[n] == d["recoverability"] / d["latency_saving"]
    # cost: teacher pass + 3 iterations x 4 images x (fwd+bwd = 3 forwards) per block, at least
    assert res.forward_equivalents > len(blocks) * 3 * 4 * 3 / 8 * (0.1 if stages else 1.0)
    if not stages:
        assert res.forward_equivalents == pytest.approx(1 + len(blocks) * (3 * 3 * 4 + 8) / 8)


def test_practise_adaptor_starts_as_identity():
    from edgeprune.pruning.criteria.practise import ChannelAdaptor

    x = torch.randn(2, 5, 3, 3)
    assert torch.equal(ChannelAdaptor((5, 3, 3))(x), x)
    t = torch.randn(2, 7, 6)
    assert torch.allclose(ChannelAdaptor((7, 6))(t), t)


# ---------------------------------------------------------------- fine-tuners
N_FT, BATCH, STEPS = 16, 8, 3


@pytest.fixture()
def ft_setup(resnet):
    teacher, entry, _ = resnet
    pixels = torch.randint(0, 256, (N_FT, 3, RES, RES), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    student = remove_blocks(teacher, ["layer1.1", "layer3.1"])
    return teacher, entry, pixels, student, DistillConfig.paper(steps=STEPS, batch_size=BATCH, lr=0.01)


@pytest.mark.parametrize("name", ["continuous", "mir"])
def test_online_kd_queries_the_teacher_every_step(ft_setup, name):
    teacher, entry, pixels, student, cfg = ft_setup
    head = student.fc.weight.clone()
    calls = _Calls(teacher)
    res = FINETUNERS.get(name)().run(student, teacher, entry, pixels, cfg)
    calls.handle.remove()
    assert isinstance(res, FinetuneResult) and res.method == name and res.steps_done == STEPS
    assert calls.calls == STEPS and calls.images == STEPS * BATCH == res.teacher_queries
    assert torch.equal(student.fc.weight, head)  # head frozen, like distill()
    assert res.seconds == pytest.approx(res.label_seconds + res.train_seconds)


@pytest.mark.parametrize("name", ["continuous", "entropy"])
def test_online_kd_trains_in_the_configured_layout(ft_setup, name):
    """The online baselines train in the layout DistillConfig asks for (channels_last by default), as
    distill() does, and hand the student back in the default layout."""
    teacher, entry, pixels, student, cfg = ft_setup
    for channels_last in (True, False):
        s = copy.deepcopy(student)
        seen = []
        conv = s.layer1[0].conv1
        handle = conv.register_forward_pre_hook(lambda m, args: seen.append(
            (args[0].is_contiguous(memory_format=torch.channels_last) and args[0].shape[0] > 1,
             m.weight.is_contiguous(memory_format=torch.channels_last))))
        FINETUNERS.get(name)().run(s, teacher, entry, pixels, dataclasses.replace(cfg, channels_last=channels_last))
        handle.remove()
        assert seen and all(x == channels_last and w == channels_last for x, w in seen), (channels_last, seen)
        assert all(p.is_contiguous() for p in s.parameters())


def test_mir_is_continuous_kd_here(ft_setup):
    teacher, entry, pixels, student, cfg = ft_setup
    other = copy.deepcopy(student)
    a = FINETUNERS.get("continuous")().run(student, teacher, entry, pixels, cfg)
    b = FINETUNERS.get("mir")().run(other, teacher, entry, pixels, cfg)
    assert a.losses == b.losses


def test_entropy_kd_queries_fewer_samples(ft_setup):
    teacher, entry, pixels, student, cfg = ft_setup
    calls = _Calls(teacher)
    res = FINETUNERS.get("entropy")().run(student, teacher, entry, pixels, cfg)
    calls.handle.remove()
    k = round(0.75 * BATCH)
    assert res.teacher_queries == calls.images == STEPS * k < STEPS * BATCH
    assert res.selection_forwards == STEPS * BATCH and res.steps_done == STEPS
    assert FINETUNERS.get("entropy")().sizes(64) == (48, 32)


def test_stored_queries_the_teacher_once_per_image(ft_setup):
    teacher, entry, pixels, student, cfg = ft_setup
    with torch.no_grad():
        reuse = {i: f for i, f in enumerate(extract_features(teacher, entry, normalise(pixels[:4], entry.mean, entry.std)))}
    calls = _Calls(teacher)
    res = FINETUNERS.get("stored")().run(student, teacher, entry, pixels, cfg, reuse=reuse)
    calls.handle.remove()
    assert res.teacher_queries == calls.images == N_FT - len(reuse)
    assert res.steps_done == STEPS and res.label_seconds > 0
    res2 = FINETUNERS.get("stored")().run(copy.deepcopy(student), teacher, entry, pixels, cfg)
    assert N_FT <= res2.teacher_queries <= N_FT + 1  # + at most a one-image shape probe


def test_online_nonfinite_loss_restores_last_good_weights(ft_setup):
    teacher, entry, pixels, student, _ = ft_setup
    res = FINETUNERS.get("continuous")().run(student, teacher, entry, pixels, DistillConfig.paper(steps=30, batch_size=BATCH, lr=1e6))
    assert res.stopped_nonfinite and res.restored_step is not None and res.restored_step < 30
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert all(p.requires_grad for p in student.parameters())


# ---------------------------------------------------------------- test-time adaptation
class TinyBN(nn.Module):
    def __init__(self, classes=10, scale=1.0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, classes)
        with torch.no_grad():
            self.fc.weight.mul_(scale)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


TINY = zoo.ZooEntry("tiny-bn", "local", "tiny-bn", 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "features", "fc", "", num_classes=10)


def _tiny(scale=1.0):
    torch.manual_seed(0)
    m = TinyBN(scale=scale).eval()
    with torch.no_grad():  # non-trivial running statistics, to see that TTA neither uses nor changes them
        for bn in (m.features[1], m.features[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    pixels = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    return m, pixels


def _bn_mode_logits(model, x):
    """Logits with BatchNorm using batch statistics, without touching the model."""
    m = copy.deepcopy(model)
    with tta.test_time_mode(m), torch.no_grad():
        return m(x)


def test_tent_updates_only_batchnorm_affine_parameters():
    model, pixels = _tiny(scale=3.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bn_names = set(tta.bn_affine_parameters(model))
    first = _bn_mode_logits(model, normalise(pixels[:8], TINY.mean, TINY.std)).argmax(1)
    preds, stats = tta.tent(model, TINY, pixels, batch_size=8, lr=0.05)
    after = model.state_dict()
    assert preds.shape == (24,) and torch.equal(preds[:8], first)  # predictions from the step's forward
    assert stats.updates == stats.batches == 3 and stats.num_classes == 10
    for k in before:
        if k in bn_names:
            assert not torch.equal(before[k], after[k]), k
        else:  # conv/linear weights and BN running statistics unchanged
            assert torch.equal(before[k], after[k]), k
    assert not model.training and all(p.requires_grad for p in model.parameters())
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert stats.ms_per_batch_adapt > 0 and stats.ms_per_batch_plain > 0 and math.isfinite(stats.slowdown)


def test_tent_refuses_a_model_without_batchnorm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    entry = zoo.ZooEntry("nobn", "local", "nobn", 8, (0.5,) * 3, (0.25,) * 3, "0", "2", "")
    with pytest.raises(Exception, match="BatchNorm"):
        tta.tent(model, entry, torch.zeros(4, 3, 8, 8, dtype=torch.uint8))


def test_eata_filters_high_entropy_samples():
    model, pixels = _tiny(scale=20.0)
    x0 = normalise(pixels[:8], TINY.mean, TINY.std)
    h0 = tta.entropy(_bn_mode_logits(model, x0))
    e0 = 0.4 * math.log(10)
    expected = int((h0 < e0).sum())
    assert 0 < expected < 8  # the fixture gives a mix of confident and uncertain samples
    preds, stats = tta.eata(copy.deepcopy(model), TINY, pixels, batch_size=8, fisher_pixels=pixels[:8])
    assert stats.e_margin == pytest.approx(e0)
    assert stats.per_batch[0] == {"size": 8, "reliable": expected, "selected": expected}  # no redundancy filter yet
    assert stats.reliable < stats.images and stats.selected <= stats.reliable
    assert all(b["selected"] <= b["reliable"] for b in stats.per_batch)
    assert stats.fisher_images == 8 and stats.fisher_seconds > 0
    # nothing reliable -> no update at all
    frozen = copy.deepcopy(model)
    _, none = tta.eata(frozen, TINY, pixels, batch_size=8, e_margin=0.0, fisher_pixels=pixels[:8])
    assert none.selected == 0 and none.updates == 0
    assert all(torch.equal(a, b) for a, b in zip(frozen.state_dict().values(), model.state_dict().values()))


class ColourClasses(nn.Module):
    """Confident predictions spread over 10 classes: the class is a function of an image's colour."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 10, 1, bias=False)
        self.bn = nn.BatchNorm2d(10)

    def forward(self, x):
        return 20.0 * self.bn(self.proj(x)).mean((2, 3))


def test_eata_redundancy_threshold_scales_with_the_number_of_classes():
    """EATA's |cos| < 0.05 was set for 1000 classes; with 10, a confident prediction has cos ~ 0.3 with
    a class-balanced running mean, so after the first batch almost nothing would pass."""
    assert tta.eata_d_margin(1000) == pytest.approx(0.05) and tta.eata_d_margin(10) == pytest.approx(0.5)
    torch.manual_seed(0)
    model = ColourClasses().eval()
    colours = torch.randint(0, 256, (48, 3, 1, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    pixels = colours.expand(48, 3, 16, 16).contiguous()
    preds, stats = tta.eata(copy.deepcopy(model), TINY, pixels, batch_size=8, fisher_pixels=pixels[:8])
    assert len(set(preds.tolist())) >= 5 and stats.reliable >= 40  # confident and varied
    assert stats.d_margin == pytest.approx(0.5)
    assert sum(b["selected"] for b in stats.per_batch[1:]) >= 0.7 * sum(b["reliable"] for b in stats.per_batch[1:])
    _, imagenet_rule = tta.eata(copy.deepcopy(model), TINY, pixels, batch_size=8, d_margin=0.05, fisher_pixels=pixels[:8])
    assert sum(b["selected"] for b in imagenet_rule.per_batch[1:]) <= 2 and imagenet_rule.updates <= 2
    # confident predictions that all name one class are still redundant under the scaled threshold
    same, same_pixels = _tiny(scale=20.0)
    _, st = tta.eata(same, TINY, same_pixels, batch_size=8, fisher_pixels=same_pixels[:8])
    assert st.per_batch[0]["selected"] > 0 and sum(b["selected"] for b in st.per_batch[1:]) == 0


def test_eata_anti_forgetting_pulls_toward_theta0():
    model, pixels = _tiny(scale=20.0)
    theta0 = {k: p.detach().clone() for k, p in tta.bn_affine_parameters(model).items()}
    ones = {k: torch.ones_like(v) for k, v in theta0.items()}
    small = {k: 0.01 * v for k, v in ones.items()}  # lr * 2 * beta * F = 0.4: a stable pull
    drift = {}
    for beta in (0.0, 2000.0):
        m = copy.deepcopy(model)
        # every sample selected (E0 above ln C, no redundancy filter) so both runs update on every batch
        _, st = tta.eata(m, TINY, pixels, batch_size=8, lr=0.01, e_margin=math.log(10) + 0.01, d_margin=2.0,
                         beta=beta, fisher=small)
        assert st.updates == 3
        drift[beta] = sum(float(((p.detach() - theta0[k]) ** 2).sum()) for k, p in tta.bn_affine_parameters(m).items())
    assert 0 < drift[2000.0] < 0.7 * drift[0.0]
    # the regulariser's gradient points away from theta0, so a descent step moves toward it
    params = {k: nn.Parameter(v + 0.1) for k, v in theta0.items()}
    loss = tta.anti_forgetting(params, ones, theta0, 2000.0)
    loss.backward()
    for k, p in params.items():
        assert torch.allclose(p.grad, 2 * 2000.0 * (p.detach() - theta0[k]))
