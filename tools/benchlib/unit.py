"""Every method on one (model, seed, corruption) stream: a "unit" of the benchmark."""

from __future__ import annotations

import copy
import time

from edgeprune.distill.bn_stats import reestimate_bn_stats
from edgeprune.models.staging import split
from edgeprune.models.surgery import remove_blocks
from edgeprune.pruning.criteria import CRITERIA, ScoringContext
from edgeprune.pruning.plan import make_plan

from .config import BASELINE_CRITERIA, BenchConfig
from .methods import Job, adapt_online, finetune, ft_extra, jobs_for, recipe_teacher
from .order import balanced_order
from .streams import UnitData, accuracy_of


def score_all(criteria, teacher, entry, blocks, prune_x, savings, seed, cfg: BenchConfig) -> dict:
    """criterion -> (CriterionResult, seconds), scored in the given order."""
    out = {}
    for name in criteria:
        ctx = ScoringContext(teacher, entry, blocks, prune_x, savings, split(teacher, entry.staging), seed=seed,
                             batch_size=cfg.batch, steps=cfg.practise_steps)
        t = time.perf_counter()
        res = CRITERIA.get(name)().score(ctx)
        out[name] = (res, time.perf_counter() - t)
    return out


class Unit:
    """Runs the methods of one stream in a balanced order (``row`` of the design in order.py) and
    collects one result row per method and k; ``order`` records the order each step used."""

    def __init__(self, model_name, teacher, entry, blocks, savings, data: UnitData, corruption: str, severity: int,
                 seed: int, cfg: BenchConfig, recipes: dict, row: int):
        self.teacher, self.entry, self.blocks, self.savings, self.data = teacher, entry, blocks, savings, data
        self.cfg, self.recipes, self.row, self.seed = cfg, recipes, row, seed
        self.clean = corruption == "clean"
        self.base = dict(model=model_name, corruption=corruption, severity=severity, seed=seed,
                         eval_images=len(data.ev_y), steps=cfg.steps)
        self.rows: list[dict] = []
        self.order: dict[str, list[str]] = {}

    def add(self, method, criterion, ft, k, acc, removed, prune_s=0.0, finetune_s=0.0, inference_s=0.0, tables=(),
            **extra) -> None:
        self.rows.append({**self.base, "method": method, "criterion": criterion, "finetune": ft, "k": k,
                          "accuracy": acc, "removed": list(removed), "latency_saving": None, "prune_s": prune_s,
                          "finetune_s": finetune_s, "pf_s": prune_s + finetune_s, "inference_s": inference_s,
                          "tables": list(tables), **extra})

    def add_online(self, method, model, k, removed, tables, prune_s=0.0, finetune_s=0.0, criterion="", ft="") -> None:
        for name, acc, seconds, fields in adapt_online(model, self.entry, self.data, self.cfg.batch):
            self.add(f"{method}+{name}", criterion, ft, k, acc, removed, prune_s, finetune_s, seconds, tables, **fields)

    # ------------------------------------------------------------------ steps
    def source_rows(self) -> None:
        """The unpruned source: as is, with BN statistics from the stream, and with TENT / EATA."""
        acc, inf = accuracy_of(self.teacher, self.entry, self.data.ev_px, self.data.ev_y)
        self.add("source", "", "", 0, acc, [], inference_s=inf, tables=("main", "bn", "shift", "elapsed"))
        t = time.perf_counter()
        self.stream_teacher = copy.deepcopy(self.teacher)
        reestimate_bn_stats(self.stream_teacher, self.entry, self.data.ft_px, self.cfg.batch)
        self.bn_s = time.perf_counter() - t
        acc, inf = accuracy_of(self.stream_teacher, self.entry, self.data.ev_px, self.data.ev_y)
        self.add("source+stream_bn", "", "", 0, acc, [], prune_s=self.bn_s, inference_s=inf, tables=("bn",))
        self.add_online("source", self.teacher, 0, [], ("bn",))
        # edgeprune's recipe scores and labels with the teacher statistics adapt would choose
        self.tt_teacher, self.tt_s, self.tt_stats = recipe_teacher(
            self.teacher, (self.stream_teacher, self.bn_s), self.entry, self.data.ft_px, self.recipes["edgeprune"],
            self.cfg.batch)

    def score(self) -> None:
        """Block scores of every criterion once (they do not depend on k), in the balanced order."""
        crit = balanced_order(["ttmpd"] if self.clean else ["ttmpd", *BASELINE_CRITERIA], self.row)
        self.order["scoring"] = crit
        args = (self.entry, self.blocks, self.data.prune_x, self.savings, self.seed, self.cfg)
        self.scores = score_all(crit, self.teacher, *args)
        res, seconds = score_all(["ttmpd"], self.stream_teacher, *args)["ttmpd"]
        self.scores["ttmpd+stream"] = (res, seconds + self.bn_s)
        self.stored_scores = self.scores  # edgeprune's recipe: scores of the teacher it distils from
        if self.tt_teacher is not self.teacher:
            scored = score_all(crit, self.tt_teacher, *args)
            self.stored_scores = {c: (res, seconds + self.tt_s) for c, (res, seconds) in scored.items()}

    def _teacher_and_scores(self, job: Job) -> tuple[object, tuple, str]:
        """(teacher, (scores, seconds), its statistics) a job prunes and distils with."""
        if job.finetune == "stored+stream_bn":
            return self.stream_teacher, self.scores["ttmpd+stream"], "stream"
        if job.finetune == "stored+source_bn":
            return self.teacher, self.scores["ttmpd"], "source"
        if job.finetune == "stored":
            return self.tt_teacher, self.stored_scores[job.criterion], self.tt_stats
        return self.teacher, self.scores[job.criterion], "source"

    def run_job(self, job: Job, k: int, ablation: bool) -> None:
        stream = job.finetune == "stored+stream_bn"
        teacher, (res, score_s), stats = self._teacher_and_scores(job)
        removed = make_plan(res.scores, self.savings, k=k).removed
        student = remove_blocks(teacher, removed)
        kind = "stored" if job.finetune.startswith("stored+") else job.finetune
        reuse = self.data.reuse(res.teacher_features) if kind.startswith("stored") else None
        fres = finetune(kind, student, teacher, self.entry, self.data, removed, reuse, self.recipes)
        acc, inf = accuracy_of(student, self.entry, self.data.ev_px, self.data.ev_y)
        extra = {**ft_extra(fres), "teacher_stats": stats}
        self.add(job.method, job.criterion, job.finetune, k, acc, removed, score_s, fres.seconds, inf, job.tables, **extra)
        if stream:  # and the student's own BN statistics re-estimated on the stream after distillation
            t = time.perf_counter()
            reestimate_bn_stats(student, self.entry, self.data.ft_px, self.cfg.batch)
            re_s = time.perf_counter() - t
            acc, inf = accuracy_of(student, self.entry, self.data.ev_px, self.data.ev_y)
            self.add("TT-MPD+stream_bn+student_bn", job.criterion, job.finetune + "+student_bn", k, acc, removed, score_s,
                     fres.seconds + re_s, inf, ("bn",), **extra)
        if job.method == "TT-MPD" and ablation and not self.clean:
            self.add_online("TT-MPD", student, k, removed, ("shift",), score_s, fres.seconds, job.criterion, job.finetune)

    def train_time_rows(self, k: int, train_pf: dict | None) -> None:
        """Train-time PF (pruned and distilled on clean TRAIN images) evaluated on this stream."""
        if train_pf is None or k not in train_pf or self.clean:
            return
        tp = train_pf[k]
        acc, inf = accuracy_of(tp["model"], self.entry, self.data.ev_px, self.data.ev_y)
        self.add("train-time PF", "ttmpd", "stored", k, acc, tp["removed"], tp["prune_s"], tp["finetune_s"], inf, ("shift",))
        self.add_online("train-time PF", tp["model"], k, tp["removed"], ("shift",), tp["prune_s"], tp["finetune_s"],
                        "ttmpd", "stored")

    def run(self, latency, train_pf: dict | None) -> list[dict]:
        """Every method of the unit; returns the rows with their latency savings filled in."""
        self.source_rows()
        self.score()
        ks = [k for k in self.cfg.ks if not self.clean or k in self.cfg.ablation_ks]
        for i, k in enumerate(ks):
            ablation = k in self.cfg.ablation_ks
            jobs = balanced_order(jobs_for(self.clean, ablation), self.row * len(self.cfg.ks) + i)
            self.order[f"k={k}"] = [j.method for j in jobs]
            for job in jobs:
                self.run_job(job, k, ablation)
            self.train_time_rows(k, train_pf)
        latency.fill(self.teacher, self.rows)
        return self.rows
