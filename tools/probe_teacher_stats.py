"""Teacher BatchNorm statistics: the label-free information score against accuracy (not a test).

    python tools/probe_teacher_stats.py fm       # fmnist_resnet (cached source model) on labelled Fashion-MNIST-C streams
    python tools/probe_teacher_stats.py photos   # efficientnet_lite0 on unlabeled photo crops, clean and noisy

For each stream: the source statistics and the prior-weighted blends of distill/normalisation.py
(N = 64, 16, 0 pseudo-samples; 256 stream images fit the statistics), scored on 64 images:
mean per-image entropy Hc, entropy of the mean prediction Hm, IM = Hm - Hc, and (labelled
streams) accuracy on 256 other images. docs/benchmarks/fidelity.md reports its output.
"""
import sys, os, time, math
from pathlib import Path
import numpy as np, torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "tools"))
torch.set_num_threads(1)
from edgeprune.models.zoo import load_model
from edgeprune.research.corruptions import corrupt
from edgeprune.research.fashion_mnist import load_fashion_mnist, to_rgb32
from edgeprune.distill import normalisation as N
from edgeprune.distill.bn_stats import reestimate_bn_stats
def im(lg):
    p = lg.softmax(1); hc = float(-(p * p.clamp_min(1e-12).log()).sum(1).mean()); m = p.mean(0)
    hm = float(-(m * m.clamp_min(1e-12).log()).sum()); return hc, hm
def run(model_name, streams, labs):
    for name, p in streams.items():
        l = labs.get(name)
        m, e, _ = load_model(model_name)
        src = N._snapshot(m); chk = p[:64]
        reestimate_bn_stats(m, e, p[:256], 64); st = N._snapshot(m)
        out = []
        for w in N.PRIOR_WEIGHTS:
            N._load(m, N.blend(src, st, w, 256))
            lg = N.logits(m, e, chk, 64); hc, hm = im(lg)
            acc = float((N.logits(m, e, p[256:], 64).argmax(1) == l[256:]).float().mean()) if l is not None else float("nan")
            out.append(f"N={w:g}: Hc {hc:.2f} Hm {hm:.2f} IM {hm-hc:.2f} acc {acc:.3f}")
        print(name, " | ".join(out), flush=True)
if sys.argv[1] == "fm":
    x, y = load_fashion_mnist("test")
    rng = np.random.default_rng(0); idx = rng.permutation(len(x))[:512]
    clean = to_rgb32(x[idx]); lab = torch.from_numpy(y[idx]).long()
    px = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()
    S = {"clean": clean, "gauss3": corrupt(clean, "gaussian_noise", 3, 0), "glass3": corrupt(clean, "glass_blur", 3, 0),
         "contrast3": corrupt(clean, "contrast", 3, 0), "elastic3": corrupt(clean, "elastic_transform", 3, 0)}
    mixed = np.concatenate([clean[:128], S["gauss3"][128:256], S["glass3"][256:384], S["contrast3"][384:]])
    perm = rng.permutation(512); S["mixed"] = mixed[perm]
    labs = {k: lab for k in S}; labs["mixed"] = lab[perm]
    run("fmnist_resnet", {k: px(v) for k, v in S.items()}, labs)
else:
    from make_photo_stream import source_photos, random_view
    photos = source_photos(); names = sorted(photos); rng = np.random.default_rng(1); arrs = []
    while len(arrs) < 320:
        a = np.asarray(random_view(photos[names[int(rng.integers(len(names)))]], rng, 224).convert("RGB"))
        if min(a.shape[:2]) >= 224: arrs.append(a[:224, :224])
    clean = np.stack(arrs); px = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()
    run("efficientnet_lite0", {"photos": px(clean), "photos_noise3": px(corrupt(clean, "gaussian_noise", 3, 0))}, {})
