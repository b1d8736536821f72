"""Fidelity probe on efficientnet_lite0: student BatchNorm mode and local gap reconstruction (not a test).

    python tools/make_photo_stream.py OUT --n 1300 --mix clean,fog,gaussian_noise   # the stream
    STREAM=OUT python tools/probe_fidelity.py train_bn 120      # suffix distillation, train-mode BatchNorm
    STREAM=OUT python tools/probe_fidelity.py frozen_bn 120     # the same with eval-mode (frozen) BatchNorm
    STREAM=OUT LSTEPS=60 python tools/probe_fidelity.py local 100   # 60 local steps per gap, then 100 global

One thread (T=1 by default), k = 3 blocks removed (REMOVED=...), 1000 fine-tune / 300 held-out
images, lr 0.02 (third argument), batch 64 as 2 x 32, the paper's step schedule; held-out
top-1 agreement, agreement on the original's confident images (max softmax >= 0.5), top-5
overlap and KL(original || student) at 1/4, 1/2, 3/4 and all of the steps, with wall time.
Appends one JSON line per run to RESULTS (default fidelity_probe.jsonl). docs/benchmarks/fidelity.md
reports its runs.
"""
import sys, time, json, copy, math, os
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import torch, torch.nn.functional as F
from torch import nn
torch.set_num_threads(int(os.environ.get("T", "1")))
from edgeprune.models.zoo import load_model
from edgeprune.models.staging import split, run_stages
from edgeprune.data.images import load_images
from edgeprune.data.transforms import normalise
from edgeprune.models.surgery import remove_blocks
from edgeprune.distill.hardware import to_layout

variant, steps = sys.argv[1], int(sys.argv[2])
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 0.02
REMOVED = os.environ.get("REMOVED", "blocks.1.1,blocks.2.1,blocks.3.1").split(",")
STREAM = os.environ.get("STREAM", "out/photo_stream")
CACHE = os.environ.get("CACHE", "out/fidelity_cache.pt")
teacher, entry, _ = load_model("efficientnet_lite0"); teacher.eval()
tst = split(teacher, entry.staging)
names = [n for n, _ in tst]
rem = sorted(names.index(r) for r in REMOVED)
# windows: previous kept stage .. next kept stage around each gap, merged
wins = []
for r in rem:
    lo, hi = r - 1, r + 1
    while lo in rem: lo -= 1
    while hi in rem: hi += 1
    wins.append((r, hi))  # the gap + the next kept stage: input = teacher input of the gap, target = after hi
start = rem[0]
need = sorted({w[0] for w in wins} | {w[1] + 1 for w in wins} | {start})
CACHE = CACHE.replace('.pt', '_' + '_'.join(map(str, need)) + '.pt')
if not os.path.exists(CACHE):
    imgs = load_images(STREAM, 224, entry.crop_pct)
    g = torch.Generator().manual_seed(0); perm = torch.randperm(len(imgs.pixels), generator=g)
    ft, held = perm[:1000], perm[1000:1300]
    acts = {i: [] for i in need}; feats = []
    with torch.no_grad():
        for b in range(0, 1000, 50):
            x = to_layout(normalise(imgs.pixels[ft[b:b+50]], entry.mean, entry.std), True)
            for i, (_, mod) in enumerate(tst):
                if i in acts: acts[i].append(x.half().contiguous())
                x = mod(x)
            feats.append(x.half().contiguous())
    torch.save({"ft": imgs.pixels[ft], "held": imgs.pixels[held], "acts": {i: torch.cat(v) for i, v in acts.items()},
                "feats": torch.cat(feats)}, CACHE)
C = torch.load(CACHE)
ft_px, held_px, acts, feats = C["ft"], C["held"], C["acts"], C["feats"]
def held_logits(model):
    model.eval(); out = []
    with torch.no_grad():
        for b in range(0, len(held_px), 50):
            out.append(model(to_layout(normalise(held_px[b:b+50], entry.mean, entry.std), True)))
    return torch.cat(out)
T = held_logits(teacher)
def fidelity(model):
    S = held_logits(model); pt = T.softmax(1)
    conf = pt.max(1).values >= 0.5
    agree = (S.argmax(1) == T.argmax(1)).float()
    t5, s5 = T.topk(5, 1).indices, S.topk(5, 1).indices
    ov = torch.tensor([len(set(a.tolist()) & set(b.tolist())) / 5 for a, b in zip(t5, s5)])
    kl = F.kl_div(S.log_softmax(1), T.log_softmax(1), log_target=True, reduction="batchmean")
    return {"agree": round(float(agree.mean()), 3), "agree_conf": round(float(agree[conf].mean()), 3), "n_conf": int(conf.sum()),
            "top5": round(float(ov.mean()), 3), "kl": round(float(kl), 3)}
student = remove_blocks(teacher, REMOVED); student.to(memory_format=torch.channels_last)
sst = split(student, entry.staging)
log = {"variant": variant, "steps": steps, "lr": lr, "removed": REMOVED, "wins": wins, "start": start, "curve": []}
log["curve"].append([0, 0.0, fidelity(student)]); print(log["curve"][-1], flush=True)
def set_bn(mods, frozen):
    for m in mods:
        m.train()
        if frozen:
            for b in m.modules():
                if isinstance(b, nn.modules.batchnorm._BatchNorm): b.eval()
def train(stages_idx, x_all, y_all, n_steps, lr, frozen_bn, t0, tag, evals=(), REL=False):
    mods = [sst[i][1] for i in stages_idx]
    params = [p for m in mods for p in m.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, max(1, round(0.4 * n_steps)), 0.1)
    g = torch.Generator().manual_seed(1)
    for s in range(1, n_steps + 1):
        set_bn(mods, frozen_bn)
        idx = torch.randperm(len(x_all), generator=g)[:64]
        opt.zero_grad()
        for part in (idx[:32], idx[32:]):
            out = x_all[part].float()
            for m in mods: out = m(out)
            y = y_all[part].float()
            loss = F.mse_loss(out, y) / (y.pow(2).mean() if REL else 1) / 2
            loss.backward()
        opt.step(); sched.step()
        if s % 50 == 0: print(tag, s, round(time.perf_counter() - t0, 1), float(loss.detach()) * 2, flush=True)
        if s in evals:
            log["curve"].append([tag + s, round(time.perf_counter() - t0, 1), fidelity(student), float(loss.detach()) * 2])
            print(log["curve"][-1], flush=True)
t0 = time.perf_counter()
suffix = [i for i in range(start, len(sst)) if i not in rem]
evals = {steps // 4, steps // 2, 3 * steps // 4, steps}
if variant in ("train_bn", "frozen_bn"):
    train(suffix, acts[start], feats, steps, lr, variant == "frozen_bn", t0, 0, evals)
elif variant.startswith("local"):
    lsteps = int(os.environ.get("LSTEPS", "100")); llr = float(os.environ.get("LLR", str(lr)))
    for lo, hi in wins:
        idx = [i for i in range(lo, hi + 1) if i not in rem]
        train(idx, acts[lo], acts[hi + 1] if hi + 1 < len(sst) else feats, lsteps, llr, True, t0, 0, (), True)
    log["curve"].append(["local_done", round(time.perf_counter() - t0, 1), fidelity(student)]); print(log["curve"][-1], flush=True)
    if steps: train(suffix, acts[start], feats, steps, lr, True, t0, 1000, evals)
log["seconds"] = time.perf_counter() - t0
print(json.dumps(log), flush=True)
with open(os.environ.get("RESULTS", "fidelity_probe.jsonl"), "a") as f: f.write(json.dumps(log) + "\n")
