"""Studies: the papers' claims, measured on the user's data.

A study is a prepared plan that changes one thing, the claim as the paper states it, and a
verdict function that reads the results and says, in one sentence, what was measured and whether
it bears the claim out (``supported``: True, False, or None when the runs cannot decide it). The
numbers behind the sentence go to the report and ``results.json``.

    study = get_study("batchnorm")
    plan = study.plan(budget={"steps": 300}, model_kwargs={"depth_multiplier": 0.25})
    ...                                   # run it (see `inceptionlab.lab.runner`)
    verdict = study.verdict(results)      # {"verdict": "...", "supported": True, "numbers": {...}}
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable

from inceptionlab.errors import UserError, closest
from inceptionlab.lab.plan import Plan, Variant
from inceptionlab.lab.results import chance_text, learned_bar

NOISE_POINTS = 0.5   # accuracy differences smaller than this (top-1 points) are read as no difference
LOSS_POINTS = 2.0    # a top-1 drop this large (points) is a loss of accuracy: "no loss" holds where the noise rules it out
BLOWUP_FACTOR = 3.0  # a validation loss above this many times that of guessing (ln classes) is a blow-up


@dataclass
class Study:
    name: str
    title: str
    paper: str
    claim: str
    variants: Callable[[dict], list[Variant]]   # (options) -> the arms of the study
    judge: Callable[[dict], dict]               # (results) -> {"verdict", "supported", "numbers"}
    train: dict = field(default_factory=dict)   # training settings the study needs (user's win)
    target: Callable[[list], float | None] | None = None   # the study's own target accuracy
    calibrate: bool = False                     # measure calibration (ECE) of every finished run
    takes_model: bool = False                   # --model picks the architecture (else the arms are fixed)
    varies: tuple = ()                          # training settings each arm sets itself
    refuse: Callable[[dict, dict], str | None] | None = None  # (train, options) -> why the study would be void

    def plan(self, *, budget: dict, seeds=(0,), data=None, train: dict | None = None,
             model_kwargs: dict | None = None, target: float | None = None, options: dict | None = None) -> Plan:
        options = dict(options or {})
        if options.get("model") and not self.takes_model:
            takers = ", ".join(s.name for s in STUDIES.values() if s.takes_model)
            raise UserError(f"the {self.name} study compares models of its own; drop --model "
                            f"({takers} take one)")
        for key in self.varies:
            if key in (train or {}):
                raise UserError(f"the {self.name} study sets {key} itself in each run; drop it "
                                f"(--{key.replace('_', '-')} or --set {key}=...)")
        why = self.refuse(train or {}, options) if self.refuse else None
        if why:
            raise UserError(f"the {self.name} study cannot measure its claim so: {why}")
        variants = self.variants(options)
        # a switch that an arm sets is the study's to vary: a shared value would be overridden in that arm
        # and apply to the others (the report then gave it as shared; residual_scale=0.5 ran the default arm)
        varied = sorted({key for v in variants for key in v.model_kwargs} & set(model_kwargs or {}))
        if varied:
            raise UserError(f"the {self.name} study sets {varied[0]} itself in its runs; drop {varied[0]} from "
                            f"--model-kwargs")
        return Plan(variants=variants, budget=dict(budget), seeds=list(seeds), data=data,
                    train={**self.train, **(train or {})}, model_kwargs=dict(model_kwargs or {}),
                    target=target, title=f"Study: {self.title}", study=self.name)

    def verdict(self, results: dict) -> dict:
        failed = [r["name"] for r in results["runs"] if r.get("status") != "finished"]
        try:
            out = self.judge(results)
        except _Undecided as exc:
            out = dict(verdict=str(exc), supported=None, numbers=exc.numbers)
        bar = _bar(results)
        if bar is not None and out.get("supported") is not None:
            bests = [r["best_top1"] for r in results["runs"]
                     if r.get("status") == "finished" and r.get("best_top1") is not None]
            if not bests or max(bests) < bar:
                out["verdict"] += (f" But no run learned beyond chance ({_chance_text(results)}), so these runs "
                                   f"cannot judge the claim; give them a larger budget.")
                out["supported"] = None
        if failed and out.get("supported") is not None:
            out["verdict"] += f" ({len(failed)} run(s) did not finish: {', '.join(failed)}.)"
        return dict(name=self.name, title=self.title, paper=self.paper, claim=self.claim, **out)


class _Undecided(Exception):
    """The runs cannot decide the claim (a needed run failed or reached nothing)."""

    def __init__(self, message: str, numbers: dict | None = None):
        super().__init__(message)
        self.numbers = numbers or {}


# ------------------------------------------------------------------ reading the results
def _variant(results: dict, name: str) -> dict:
    for row in results["variants"]:
        if row["variant"] == name:
            return row
    raise _Undecided(f"the study has no run {name!r}")


def _mean(results: dict, name: str, key: str, *, required: bool = True):
    stat = _variant(results, name).get(key)
    if stat is None:
        if required:
            raise _Undecided(f"cannot judge: {name} has no {key.replace('_', ' ')} "
                             f"({_why(results, name)})")
        return None
    return stat["mean"]


def _spread(results: dict, *names: str, key: str = "best_top1") -> float:
    """The larger seed spread (std) of ``key`` among ``names``; 0 with one seed."""
    spreads = [(_variant(results, n).get(key) or {}).get("std", 0.0) for n in names]
    return max(spreads + [0.0])


def _status(results: dict, name: str) -> str:
    statuses = [r["status"] for r in results["runs"] if r["variant"] == name]
    if statuses and all(s == "finished" for s in statuses):
        return "finished"
    return next((s for s in statuses if s != "finished"), "pending")


def _why(results: dict, name: str) -> str:
    for r in results["runs"]:
        if r["variant"] == name and r.get("status") != "finished":
            return f"{r['status']}: {r.get('message') or 'no message'}"
    return "it did not reach it"


def _ran(results: dict, *names: str, numbers: dict | None = None) -> None:
    """_Undecided unless each arm finished or diverged: a failed or missing run is no evidence either way
    (a crashed Inception-v4 read as "never reached the target")."""
    for name in names:
        if not any(r["variant"] == name for r in results["runs"]):  # a compare plan naming a study: not "did not run"
            raise _Undecided(f"cannot judge: the plan has no run named {name}, which this study compares "
                             f"(`inceptionlab study` makes the study's own runs)", numbers)
        if _status(results, name) not in ("finished", "diverged"):
            raise _Undecided(f"cannot judge: {name} did not run to its end ({_why(results, name)})", numbers)


def _steps(results: dict, name: str) -> tuple[float | None, str]:
    """(mean steps to the target over the seeds, or None unless every finished seed reached it; a note
    such as " (1 of 2 seeds)"): a mean over the seeds that reached it made a slower arm look faster."""
    row = _variant(results, name)
    stat = row.get("steps_to_target")
    reached, finished = row.get("steps_to_target_reached", 0), row.get("finished", 0)
    if stat is None or reached < finished:
        note = f" (reached in {reached} of {finished} seeds)" if reached else ""
        return None, note
    return stat["mean"], ""


def _learned(results: dict, name: str, key: str = "best_top1") -> bool:
    """Whether an arm's accuracy beats chance beyond the noise of guessing (True when chance is unknown)."""
    bar = _bar(results)
    value = (_variant(results, name).get(key) or {}).get("mean")
    return bar is None or (value is not None and value >= bar)


def _chance(results: dict) -> float | None:
    classes = results.get("classes")
    return 100.0 / classes if classes else None


def _bar(results: dict) -> float | None:
    """The top-1 that beats chance beyond the noise of guessing on these validation images (None: classes unknown)."""
    classes = results.get("classes")
    return learned_bar(classes, results.get("val_images")) if classes else None


def _chance_text(results: dict) -> str:
    return chance_text(results["classes"], results.get("val_images")) if results.get("classes") else "chance unknown"


def _tolerance(results: dict, *names: str, key: str = "best_top1") -> float:
    """Top-1 points below which a difference of ``key`` between ``names`` is noise (see ``_noise``)."""
    means = [(_variant(results, name).get(key) or {}).get("mean") for name in names]
    return _noise(results, means, _spread(results, *names, key=key))


def _noise(results: dict, means: list, spread: float = 0.0) -> float:
    """Top-1 points below which a difference between accuracies ``means`` (their larger seed spread ``spread``)
    is noise: the largest of NOISE_POINTS, twice the seed spread, and twice the binomial standard error of a
    difference on this many validation images."""
    tol = max(NOISE_POINTS, 2 * spread)
    n = results.get("val_images")
    ps = [p / 100 for p in means if p is not None][:2]
    if n and ps:
        se = math.sqrt(sum(p * (1 - p) / n for p in ps) * (2 / len(ps)))
        tol = max(tol, 200 * se)
    return tol


def _top1_at(results: dict, name: str, step: float) -> list[float]:
    """Each finished seed's top-1 at its last evaluation at or before ``step`` (seeds without one left out)."""
    values = []
    for r in results["runs"]:
        if r["variant"] == name and r.get("status") == "finished":
            rows = [m for m in r.get("metrics") or [] if m.get("top1") is not None and m.get("step") is not None
                    and m["step"] <= step]
            if rows:
                values.append(rows[-1]["top1"])
    return values


def _ahead(results: dict, fast: str, slow: str, step: float) -> tuple[bool | None, str, dict]:
    """Whether ``fast`` trained faster than ``slow``, read as its lead in top-1 at ``step`` (where the first of
    them reached the target) against the noise: steps to a target are known only at evaluations, and one
    evaluation's lead on a few images is no evidence. (True / False / None, the sentence, the numbers)."""
    a, b = _top1_at(results, fast, step), _top1_at(results, slow, step)
    if not a or not b:
        return None, f"{slow if a else fast} has no evaluation at or before step {step:.0f} to compare", {}
    means = (statistics.fmean(a), statistics.fmean(b))
    spread = max(statistics.stdev(x) if len(x) > 1 else 0.0 for x in (a, b))
    tol = _noise(results, list(means), spread)
    diff = means[0] - means[1]
    lead = True if diff > tol else (False if diff < -tol else None)
    how = "within" if lead is None else "beyond"
    text = (f"at step {step:.0f} top-1 was {_f(means[0])}% against {_f(means[1])}% ({diff:+.2f} points, "
            f"{how} the noise +-{tol:.1f})")
    return lead, text, dict(step=step, top1={fast: means[0], slow: means[1]}, difference=diff, noise=tol)


def _pct(a, b):
    """Relative saving of b against a, in %."""
    return 100.0 * (1 - b / a) if a else None


def _judged(verdict: str, diff: float, tol: float, numbers: dict) -> dict:
    """A study's result from a top-1 difference: supported beyond the noise, contradicted, or undecided."""
    supported = True if diff > tol else (False if diff < -tol else None)
    if supported is None:
        verdict += " The difference is within the noise of this budget."
    return dict(verdict=verdict, supported=supported, numbers=numbers)


def _no_loss(diff: float, tol: float) -> bool | None:
    """Whether an arm lost no accuracy, from its top-1 difference ``diff`` against the other and the noise ``tol``:
    False for a drop beyond the noise; True where even the low end of the noise (diff - tol) stays above a drop of
    LOSS_POINTS; None where the noise is too large to tell. (A drop within a noise of +-24.8 points read as no loss:
    that noise cannot tell a network as good from one 30 points worse.)"""
    if diff < -tol:
        return False
    return True if diff - tol > -LOSS_POINTS else None


def _too_noisy(what: str) -> str:
    """The undecided sentence of a no-loss claim whose noise is too large (see `_no_loss`)."""
    return (f" The difference is within the noise of this budget, which is too large to tell whether {what} cost "
            f"accuracy (no loss is shown only where the noise rules out a drop of {LOSS_POINTS:g} points; give the "
            f"runs more validation images or seeds).")


def _sped_up(verdict: str, faster: bool | None, compared: dict, rest: str | None, numbers: dict) -> dict:
    """A claim of a speed-up and more: yes only when the speed-up is beyond the noise and ``rest`` (why the rest
    of the claim is not borne out, or None) is None; no when the other arm was faster beyond the noise."""
    if faster is None:
        if compared:  # (no numbers compared: the sentence names the missing evaluation)
            verdict += " The difference is within the noise of this budget."
        return dict(verdict=verdict, supported=None, numbers=numbers)
    if faster and rest:
        return dict(verdict=f"{verdict} The speed-up is beyond the noise, but {rest}.", supported=None, numbers=numbers)
    return dict(verdict=verdict, supported=faster, numbers=numbers)


def _target(results: dict, numbers: dict) -> float:
    """The target top-1 the runs are timed by; _Undecided with the reason when there is none."""
    target = results.get("target_top1")
    if target is None:
        why = (results.get("target_rule") or "").removeprefix("none: ") or "none was set"
        raise _Undecided(f"cannot judge: there is no target accuracy to time the runs by: {why}", numbers)
    return target


def _f(value, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# ------------------------------------------------------------------ batchnorm
def _bn_variants(options: dict) -> list[Variant]:
    base = float(options.get("lr") or 0.005)
    out = []
    for norm in (True, False):
        for mult in (1, 5, 30):
            tag = "bn" if norm else "no_bn"
            out.append(Variant(f"{tag}-lr_x{mult}", "bn_inception", {"norm": norm}, {"lr": base * mult}))
    return out


def _bn_target(records: list) -> float | None:
    """The paper's target: the best accuracy of the network without BN at the base rate."""
    from inceptionlab.lab.results import best_top1

    base = [best_top1(r) for r in records if r["variant"] == "no_bn-lr_x1" and r.get("status") == "finished"]
    base = [b for b in base if b is not None]
    return sum(base) / len(base) if base else None  # not rounded: 38.889 rounded to 38.89 was never reached


def _bn_judge(results: dict) -> dict:
    target = results.get("target_top1")
    high = {f"no_bn-lr_x{m}": _status(results, f"no_bn-lr_x{m}") for m in (5, 30)}
    bn_high = {f"bn-lr_x{m}": _status(results, f"bn-lr_x{m}") for m in (5, 30)}
    numbers = dict(target_top1=target, no_bn_high_rates=high, bn_high_rates=bn_high)
    _ran(results, "no_bn-lr_x1", numbers=numbers)
    if not _learned(results, "no_bn-lr_x1"):  # its best is the target: a chance-level one says nothing
        raise _Undecided(f"cannot judge: the network without BN did not learn beyond chance (best top-1 "
                         f"{_f(_mean(results, 'no_bn-lr_x1', 'best_top1', required=False))}% against "
                         f"{_chance_text(results)}), so its best is no target to reach; give the runs a larger "
                         f"budget", numbers)
    target = _target(results, numbers)
    bn_arms = [f"bn-lr_x{m}" for m in (1, 5, 30)]
    if not any(_status(results, n) in ("finished", "diverged") for n in bn_arms):
        raise _Undecided(f"cannot judge: no run with BN ran to its end ({_why(results, bn_arms[0])})", numbers)
    # the target is the mean of its seeds' bests, which the lower seeds never reach: the ones that did
    no_bn_steps = _mean(results, "no_bn-lr_x1", "steps_to_target")
    reached = {n: steps for n in bn_arms if (steps := _steps(results, n)[0]) is not None}
    numbers.update(steps_no_bn=no_bn_steps, steps_with_bn=reached)
    div_text, diverged = _bn_high_rates(high)
    if not reached:
        return _bn_never_reached(results, target, bn_arms, div_text, numbers)
    best_name, best_steps = min(reached.items(), key=lambda kv: kv[1])
    ratio = no_bn_steps / best_steps if best_steps else None
    numbers["speedup"] = ratio
    fewer = f"{_f(ratio, 1)}x fewer steps" if not ratio or ratio >= 1 else f"{_f(1 / ratio, 1)}x more steps"
    verdict = (f"With BN ({best_name}) the network reached the no-BN run's best top-1 ({_f(target)}%) in "
               f"{best_steps:.0f} steps against {no_bn_steps:.0f} without: {fewer} (the paper: 14x)")
    if ratio == 1.0:  # the same evaluation: steps are known only at evaluations
        return dict(verdict=f"{verdict}; {div_text}. Both reached it at the same evaluation.", supported=None,
                    numbers=numbers)
    faster, race, numbers["first_to_reach"] = _ahead(results, best_name, "no_bn-lr_x1", min(best_steps, no_bn_steps))
    rest = (None if diverged else "the claim's second half does not hold here" if diverged is False
            else "no high-rate run without BN ran to its end to show whether such rates diverge")
    return _sped_up(f"{verdict}; {race}; {div_text}.", faster, numbers["first_to_reach"], rest, numbers)


def _bn_high_rates(high: dict) -> tuple[str, bool | None]:
    """What became of the high-rate runs without BN ("without BN, the 5x and 30x rates diverged"), and whether
    that bears out "such rates make training diverge": no when one trained, unknown when none ran to its end."""
    fates = {"diverged": [], "finished": [], "other": []}
    for name, status in high.items():
        fates[status if status in fates else "other"].append(name.split("_x")[1] + "x")
    said = []
    if fates["diverged"]:
        said.append(f"the {' and '.join(fates['diverged'])} rate{'s' * (len(fates['diverged']) > 1)} diverged")
    if fates["finished"]:
        said.append(f"the {' and '.join(fates['finished'])} rate{'s' * (len(fates['finished']) > 1)} "
                    f"trained without diverging")
    if fates["other"]:
        said.append(f"the {' and '.join(fates['other'])} rate run{'s' * (len(fates['other']) > 1)} did not finish")
    diverged = False if fates["finished"] else (True if fates["diverged"] else None)
    return "without BN, " + " and ".join(said), diverged


def _bn_never_reached(results: dict, target: float, bn_arms: list, div_text: str, numbers: dict) -> dict:
    """No BN run reached the target: a no when the best with BN fell short of it beyond the noise."""
    bests = {n: b for n in bn_arms if (b := _mean(results, n, "best_top1", required=False)) is not None}
    if not bests:
        return dict(verdict=f"No BN run reached the no-BN run's best top-1 ({_f(target)}%): none finished "
                            f"({_why(results, bn_arms[0])}); {div_text}.", supported=False, numbers=numbers)
    name = max(bests, key=bests.get)
    tol, diff = _tolerance(results, "no_bn-lr_x1", name), bests[name] - target
    numbers.update(best_with_bn={name: bests[name]}, noise=tol)
    verdict = (f"No BN run reached the no-BN run's best top-1 ({_f(target)}%) within the budget (the best with BN: "
               f"{name} at {_f(bests[name])}%{_steps(results, name)[1]}, {diff:+.2f} points, noise +-{tol:.1f}); "
               f"{div_text}.")
    if diff < -tol:
        return dict(verdict=verdict, supported=False, numbers=numbers)
    return dict(verdict=verdict + " The shortfall is not beyond the noise of this budget.", supported=None,
                numbers=numbers)


# ------------------------------------------------------------------ factorization
FACTOR_ARMS = (("unfactorized", dict(factorize_5x5=False, factorize_nxn=False)),
               ("5x5_as_two_3x3", dict(factorize_5x5=True, factorize_nxn=False)),
               ("also_nxn_as_1xn_nx1", dict(factorize_5x5=True, factorize_nxn=True)))


def _factor_variants(options: dict) -> list[Variant]:
    model = options.get("model") or "inception_v3"
    return [Variant(name, model, dict(kw)) for name, kw in FACTOR_ARMS]


def _factor_refuse(train: dict, options: dict) -> str | None:
    """A model without 5x5 convolutions makes the 5x5 arm the unfactorized network again."""
    from inceptionlab.tools.summary import build_on_meta

    model = options.get("model") or "inception_v3"
    try:
        arms = [build_on_meta(model, **kw) for _, kw in FACTOR_ARMS[:2]]
    except Exception:  # a model the switches do not fit: the plan check names it
        return None
    if sum(p.numel() for p in arms[0].parameters()) == sum(p.numel() for p in arms[1].parameters()):
        return (f"{model} has no 5x5 convolution, so its 5x5_as_two_3x3 arm would be the unfactorized "
                f"network; pick a model with one (inception_v3, inception_v4, the Inception-ResNets, googlenet_paper)")
    return None


def _factor_judge(results: dict) -> dict:
    names = [n for n, _ in FACTOR_ARMS]
    macs = [_mean(results, n, "macs") for n in names]
    params = [_mean(results, n, "params") for n in names]
    top1 = [_mean(results, n, "best_top1", required=False) for n in names]
    speed = [_mean(results, n, "train_images_per_sec", required=False) for n in names]
    numbers = dict(macs=dict(zip(names, macs)), params=dict(zip(names, params)), best_top1=dict(zip(names, top1)),
                   train_images_per_sec=dict(zip(names, speed)),
                   macs_saved_5x5_pct=_pct(macs[0], macs[1]), macs_saved_nxn_pct=_pct(macs[1], macs[2]),
                   params_saved_5x5_pct=_pct(params[0], params[1]), params_saved_nxn_pct=_pct(params[1], params[2]))
    if top1[0] is None or top1[2] is None:
        raise _Undecided(f"Factorizing saved {_f(numbers['macs_saved_5x5_pct'], 1)}% and "
                         f"{_f(numbers['macs_saved_nxn_pct'], 1)}% of the multiply-adds, but the accuracy "
                         f"cannot be compared: {_why(results, names[0] if top1[0] is None else names[2])}")
    if not (_learned(results, names[0]) or _learned(results, names[2])):
        raise _Undecided(f"Factorizing saved {_f(numbers['macs_saved_5x5_pct'], 1)}% and "
                         f"{_f(numbers['macs_saved_nxn_pct'], 1)}% of the multiply-adds, but neither the "
                         f"unfactorized nor the fully factorized network learned beyond chance (top-1 "
                         f"{_f(top1[0])}% and {_f(top1[2])}%), so the accuracy cannot be compared; give the "
                         f"runs a larger budget", numbers)
    tol = _tolerance(results, names[0], names[2])
    diff = top1[2] - top1[0]
    verdict = (f"Factorizing the 5x5s saved {_f(numbers['macs_saved_5x5_pct'], 1)}% of the whole network's "
               f"multiply-adds ({_f(numbers['params_saved_5x5_pct'], 1)}% of its parameters) and factorizing "
               f"n x n saved another {_f(numbers['macs_saved_nxn_pct'], 1)}% "
               f"({_f(numbers['params_saved_nxn_pct'], 1)}%) - the paper's 28% and 33% are per replaced "
               f"convolution; at equal budget top-1 went {_f(top1[0])}% -> {_f(top1[1])}% -> {_f(top1[2])}% "
               f"({diff:+.2f} points, noise +-{tol:.1f}).")
    numbers.update(top1_difference=diff, noise=tol)
    saved = (numbers["macs_saved_5x5_pct"] or 0) > 0
    supported = _no_loss(diff, tol) if saved else False  # (it said yes to any drop within the noise, however large)
    if supported is None:
        verdict += _too_noisy("factorizing")
    return dict(verdict=verdict, supported=supported, numbers=numbers)


# ------------------------------------------------------------------ label smoothing
def _ls_variants(options: dict) -> list[Variant]:
    model = options.get("model") or "inception_v3"
    return [Variant("no_smoothing", model, {}, {"smoothing": 0.0}),
            Variant("smoothing_0.1", model, {}, {"smoothing": 0.1})]


def _ls_judge(results: dict) -> dict:
    a, b = "no_smoothing", "smoothing_0.1"
    t1 = (_mean(results, a, "best_top1"), _mean(results, b, "best_top1"))
    t5 = (_mean(results, a, "best_top5", required=False), _mean(results, b, "best_top5", required=False))
    ece = (_mean(results, a, "ece", required=False), _mean(results, b, "ece", required=False))
    tol = _tolerance(results, a, b)
    diff = t1[1] - t1[0]
    numbers = dict(best_top1={a: t1[0], b: t1[1]}, best_top5={a: t5[0], b: t5[1]}, ece={a: ece[0], b: ece[1]},
                   top1_difference=diff, noise=tol)
    calib, worse_calibrated = "", False
    if None not in ece:
        seeds = min((_variant(results, n).get("ece") or {}).get("n", 1) for n in (a, b))
        ece_noise = 2 * _spread(results, a, b, key="ece")
        if round(ece[1], 2) == round(ece[0], 2):
            how = "equally calibrated"
        elif seeds < 2:  # one seed: its ECE moved 7.4 -> 8.3 where another seed's fell 7.6 -> 2.0
            how = (f"{'better' if ece[1] < ece[0] else 'worse'} calibrated in this one seed; no seed spread to "
                   f"judge it by")
        elif abs(ece[1] - ece[0]) <= ece_noise:
            how = f"within the seed spread +-{ece_noise:.1f}"
        else:
            worse_calibrated = ece[1] > ece[0]
            how = f"{'worse' if worse_calibrated else 'better'} calibrated, beyond the seed spread +-{ece_noise:.1f}"
        numbers["ece_noise"] = ece_noise if seeds > 1 else None
        calib = f"; expected calibration error {_f(ece[0])}% -> {_f(ece[1])}% ({how})"
    top5 = f" and top-5 {_f(t5[0])}% -> {_f(t5[1])}%" if None not in t5 else ""  # none with <= 5 classes
    verdict = (f"Label smoothing 0.1 changed top-1 by {diff:+.2f} points ({_f(t1[0])}% -> {_f(t1[1])}%, "
               f"noise +-{tol:.1f}){top5}{calib} "
               f"(the paper: about 0.2 points better top-1 and top-5 on ImageNet).")
    judged = _judged(verdict, diff, tol, numbers)
    if judged["supported"] and worse_calibrated:  # the claim's second half: better calibrated (it said yes regardless)
        judged.update(verdict=f"{verdict} The top-1 gain is beyond the noise, but calibration got worse beyond the "
                              f"seed spread: the claim's second half does not hold here.", supported=None)
    return judged


# ------------------------------------------------------------------ grid reduction
GRID_ARMS = ("efficient", "pool_then_conv", "conv_then_pool")


def _grid_variants(options: dict) -> list[Variant]:
    model = options.get("model") or "inception_v3"
    return [Variant(g, model, {"grid_reduction": g}) for g in GRID_ARMS]


def _grid_judge(results: dict) -> dict:
    macs = {g: _mean(results, g, "macs") for g in GRID_ARMS}
    top1 = {g: _mean(results, g, "best_top1", required=False) for g in GRID_ARMS}
    numbers = dict(macs=macs, best_top1=top1, macs_vs_conv_then_pool_pct=_pct(macs["conv_then_pool"], macs["efficient"]))
    if top1["efficient"] is None:
        raise _Undecided(f"cannot judge: the efficient reduction did not train ({_why(results, 'efficient')})")
    tol = _tolerance(results, *GRID_ARMS)
    parts = [f"The efficient grid reduction cost {_f(numbers['macs_vs_conv_then_pool_pct'], 1)}% fewer "
             f"multiply-adds than conv-then-pool"]
    kept = []  # _no_loss against each other arm (it said yes to any drop within the noise, however large)
    for other in ("pool_then_conv", "conv_then_pool"):
        if top1[other] is None:
            parts.append(f"{other} did not finish ({_why(results, other)})")
            continue
        diff = top1["efficient"] - top1[other]
        parts.append(f"top-1 {_f(top1['efficient'])}% against {_f(top1[other])}% for {other} ({diff:+.2f})")
        kept.append(_no_loss(diff, tol))
    if len(kept) < 2:
        supported = None  # the accuracy claim stands against both, or is not judged
    elif macs["efficient"] >= macs["conv_then_pool"] or False in kept:
        supported = False
    else:
        supported = None if None in kept else True
    noisy = supported is None and len(kept) == 2  # both compared, within a noise too large to tell
    if not _learned(results, "efficient") and (supported is not None or noisy):  # chance comes first
        supported, noisy = None, False
        parts.append("the efficient arm did not learn beyond chance, so its accuracy says nothing")
    verdict = "; ".join(parts) + (f" (noise +-{tol:.1f} points; the paper: as expressive as conv-then-pool, "
                                  f"without pool-then-conv's bottleneck, at a third of the cost).")
    if noisy:
        verdict += _too_noisy("the efficient reduction")
    return dict(verdict=verdict, supported=supported, numbers=numbers)


# ------------------------------------------------------------------ residual
RESIDUAL_ARMS = (("inception_v4", "inception_v4", {}),
                 ("inception_resnet_v2", "inception_resnet_v2", {}),
                 ("irv2_scale_1.0", "inception_resnet_v2", {"residual_scale": 1.0}),
                 ("irv2_scale_0.1", "inception_resnet_v2", {"residual_scale": 0.1}))


def _residual_variants(options: dict) -> list[Variant]:
    return [Variant(n, m, dict(kw)) for n, m, kw in RESIDUAL_ARMS]


def _residual_judge(results: dict) -> dict:
    v4, v4_note = _steps(results, "inception_v4")
    rn, rn_note = _steps(results, "inception_resnet_v2")
    status = {n: _status(results, n) for n, _, _ in RESIDUAL_ARMS}
    macs = {n: _mean(results, n, "macs", required=False) for n, _, _ in RESIDUAL_ARMS}
    scaled = {n: _stability(results, n) for n in ("irv2_scale_1.0", "irv2_scale_0.1")}
    numbers = dict(steps_to_target=dict(inception_v4=v4, inception_resnet_v2=rn), status=status, macs=macs,
                   target_top1=results.get("target_top1"), scale={n: nums for n, (_, _, nums) in scaled.items()})
    _ran(results, "inception_v4", "inception_resnet_v2", numbers=numbers)
    target = _target(results, numbers)
    if rn is None and v4 is None:
        raise _Undecided(f"cannot judge: neither Inception-v4{v4_note} nor Inception-ResNet-v2{rn_note} reached the "
                         f"target ({_f(target)}% top-1); give the runs a larger budget", numbers)
    if v4 is None:
        first = f"Inception-ResNet-v2 reached the target ({_f(target)}% top-1) in {rn:.0f} steps; Inception-v4 " \
                f"never did{v4_note}"
    elif rn is None:
        first = f"Inception-v4 reached the target ({_f(target)}% top-1) in {v4:.0f} steps; Inception-ResNet-v2 " \
                f"never did{rn_note}"
    else:
        first = (f"Inception-ResNet-v2 reached the target ({_f(target)}% top-1) in {rn:.0f} steps against {v4:.0f} "
                 f"for Inception-v4")
    (wide, wide_text, _), (scaled_down, scaled_text, _) = scaled.values()
    scale = f"with residual scale 1.0 the run {wide_text}, with 0.1 it {scaled_text}"
    if scaled_down:
        scale += ": scaling by 0.1 did not keep training stable"
    elif scaled_down is False and wide:
        scale += ": scaling by 0.1 kept training stable"
    elif scaled_down is False and wide is False:
        scale += ": neither ran unstable"
    paper = (" (the paper: residual connections train faster; scaling by 0.1-0.3 keeps very wide networks from "
             "dying, which a narrow network may not show).")
    if rn == v4:  # the same evaluation: no order between them
        return dict(verdict=f"{first}; {scale}{paper} Both reached it at the same evaluation.", supported=None,
                    numbers=numbers)
    faster, race, numbers["first_to_reach"] = _ahead(results, "inception_resnet_v2", "inception_v4",
                                                     min(s for s in (rn, v4) if s is not None))
    # yes needs the second half shown: the wide run unstable and the scaled one not (a crashed or a calm
    # pair said yes of a claim they never tested)
    rest = ("the claim's second half does not hold here" if scaled_down else
            "the scaled run did not run to its end, so the claim's second half is untested" if scaled_down is None else
            "neither scale ran unstable at this width and budget, so the claim's second half is untested"
            if not wide else None)
    return _sped_up(f"{first}; {race}; {scale}{paper}", faster, numbers["first_to_reach"], rest, numbers)


def _stability(results: dict, name: str) -> tuple[bool | None, str, dict]:
    """Whether an arm ran unstable: it diverged, or its validation loss blew up (above BLOWUP_FACTOR times that of
    guessing, ln classes), which its final training loss hides (None: it did not run to its end); the words
    ("finished (final training loss 0.512; validation loss worst 2.31, final 2.29)") and the numbers."""
    status = _status(results, name)
    losses = [m["val_loss"] for r in results["runs"]
              if r["variant"] == name and r.get("status") in ("finished", "diverged")
              for m in r.get("metrics") or [] if m.get("val_loss") is not None]
    worst = max((v if math.isfinite(v) else math.inf for v in losses), default=None)
    numbers = dict(final_train_loss=_mean(results, name, "final_train_loss", required=False), worst_val_loss=worst,
                   final_val_loss=_mean(results, name, "final_val_loss", required=False))
    classes = results.get("classes")
    limit = BLOWUP_FACTOR * math.log(classes) if classes and classes > 1 else None
    blew_up = worst is not None and limit is not None and worst > limit
    above = f" (above {limit:.2f}, {BLOWUP_FACTOR:g}x that of guessing)" if blew_up else ""
    text = (f"{status}{' but its validation loss blew up' if blew_up else ''} (final training loss "
            f"{_f(numbers['final_train_loss'], 3)}; validation loss worst {_f(worst)}{above}, final "
            f"{_f(numbers['final_val_loss'])})")
    unstable = True if status == "diverged" or blew_up else (False if status == "finished" else None)
    return unstable, text, numbers


# ------------------------------------------------------------------ aux
def _aux_variants(options: dict) -> list[Variant]:
    model = options.get("model") or "inception_v3"
    return [Variant("no_aux", model, {"aux_logits": False}), Variant("aux", model, {"aux_logits": True})]


def _aux_refuse(train: dict, options: dict) -> str | None:
    if train.get("aux_weight") is not None and not train["aux_weight"]:
        return "with aux_weight=0 the aux heads add nothing to the loss; drop the aux_weight setting"
    return None


def _aux_judge(results: dict) -> dict:
    t1 = {n: _mean(results, n, "final_top1") for n in ("no_aux", "aux")}
    reached = {n: _steps(results, n) for n in ("no_aux", "aux")}  # a mean over the seeds that got there
    steps = {n: v for n, (v, _) in reached.items()}  # made an arm that reached it once look fast
    tol = _tolerance(results, "no_aux", "aux", key="final_top1")
    diff = t1["aux"] - t1["no_aux"]
    numbers = dict(final_top1=t1, steps_to_target=steps, noise=tol)
    said = {n: (f"in {v:.0f} steps" if v is not None else f"not in every seed{note}" if note else "never")
            for n, (v, note) in reached.items()}
    reach = (f"; target reached {said['aux']} with them and {said['no_aux']} without"
             if any(v is not None or note for v, note in reached.values()) else "")
    verdict = (f"With auxiliary classifiers the final top-1 was {_f(t1['aux'])}% against {_f(t1['no_aux'])}% "
               f"without ({diff:+.2f} points, noise +-{tol:.1f}){reach} (the paper: no faster early training, "
               f"a slightly better end, as a regularizer).")
    judged = _judged(verdict, diff, tol, numbers)
    reached_at = [v for v in steps.values() if v is not None]
    if judged["supported"] and reached_at and results.get("target_top1") is not None:
        # the claim's first half: no faster early training (a run 7.5x faster to the target was a yes)
        faster, race, numbers["first_to_reach"] = _ahead(results, "aux", "no_aux", min(reached_at))
        if faster:
            judged.update(verdict=f"{verdict} But {race}: with them training was faster early, which the paper says "
                                  f"it is not.", supported=None)
    return judged


# ------------------------------------------------------------------ family
FAMILY = ("googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2")


def _family_variants(options: dict) -> list[Variant]:
    return [Variant(n, n) for n in FAMILY]


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None under three pairs."""
    if len(xs) < 3:
        return None

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        r = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else None


def _family_judge(results: dict) -> dict:
    from inceptionlab.models import model_card

    measured = {n: _mean(results, n, "best_top1", required=False) for n in FAMILY}
    imagenet = {n: model_card(n).get("top1") for n in FAMILY}
    order = sorted((n for n in FAMILY if measured[n] is not None), key=lambda n: -measured[n])
    # a family at chance has no place in an order: three at 10% on 10 classes had ranked it
    learned = [n for n in order if _learned(results, n)]
    pairs = [(imagenet[n], measured[n]) for n in learned if imagenet[n] is not None]
    rho = spearman([p[0] for p in pairs], [p[1] for p in pairs])
    tol = _tolerance(results, *order) if order else NOISE_POINTS
    numbers = dict(best_top1=measured, imagenet_top1=imagenet, learned=learned, spearman=rho, noise=tol,
                   order=order)
    ranked = "".join(f"{' ~ ' if i and measured[order[i - 1]] - measured[n] <= tol else ' > ' if i else ''}"
                     f"{n} ({measured[n]:.1f}%)" for i, n in enumerate(order))
    if len(learned) < 3:
        raise _Undecided(f"cannot judge: {len(learned)} of the {len(order)} finished families learned beyond chance "
                         f"({_chance_text(results)}), so there is no order to compare ({ranked}); give the runs a "
                         f"larger budget", numbers)
    if rho is None:
        raise _Undecided(f"cannot judge: the families that learned reached the same best top-1 "
                         f"({_f(pairs[0][1]) if pairs else '?'}%), so there is no order to compare; give the runs a "
                         f"larger budget", numbers)
    spread = measured[learned[0]] - measured[learned[-1]]
    verdict = (f"Measured order by best top-1 (~: within the noise, +-{tol:.1f} points): {ranked}; "
               f"rank correlation of the {len(pairs)} that learned with the ImageNet top-1 of the public weights: "
               f"{rho:+.2f} (+1 = same order as on ImageNet).")
    if spread <= tol:  # the whole order is noise: a "no" from it was a verdict on chance
        verdict += " The differences are within the noise of this budget."
        supported = None
    else:
        supported = True if rho >= 0.5 else (False if rho <= 0 else None)
    return dict(verdict=verdict, supported=supported, numbers=numbers)


# ------------------------------------------------------------------ the registry
STUDIES: dict[str, Study] = {s.name: s for s in [
    Study("batchnorm", "batch normalization and the learning rate",
          "Ioffe & Szegedy 2015, Batch Normalization, Sec. 4.2 (arXiv:1502.03167)",
          "With batch normalization the same accuracy is reached in 14 times fewer training steps, at "
          "learning rates 5x and 30x higher; without it such rates make training diverge.",
          _bn_variants, _bn_judge, train=dict(opt="sgd", sched="constant"), target=_bn_target),
    Study("factorization", "factorized convolutions",
          "Szegedy et al. 2015, Rethinking the Inception Architecture, Sec. 3.1-3.2 (arXiv:1512.00567)",
          "Replacing a 5x5 convolution by two 3x3 saves 28% of its computation, and a 3x3 by 1x3 + 3x1 "
          "saves 33%, without loss of expressiveness.",
          _factor_variants, _factor_judge, takes_model=True, refuse=_factor_refuse),
    Study("label_smoothing", "label smoothing",
          "Szegedy et al. 2015, Rethinking the Inception Architecture, Sec. 7 (arXiv:1512.00567); "
          "calibration: Mueller, Kornblith & Hinton 2019, When Does Label Smoothing Help?",
          "Label smoothing with epsilon 0.1 improves top-1 and top-5 error by about 0.2 points absolute; "
          "it also makes the network's confidences better calibrated.",
          _ls_variants, _ls_judge, calibrate=True, takes_model=True, varies=("smoothing",)),
    Study("grid_reduction", "grid-size reduction",
          "Szegedy et al. 2015, Rethinking the Inception Architecture, Sec. 4, Fig. 9-10 (arXiv:1512.00567)",
          "Parallel stride-2 convolution and pooling branches reduce the grid as expressively as "
          "convolution-then-pooling at a third of its cost, without the representational bottleneck of "
          "pooling-then-convolution.",
          _grid_variants, _grid_judge, takes_model=True),
    Study("residual", "residual connections and their scaling",
          "Szegedy et al. 2016, Inception-v4, Inception-ResNet, Sec. 3.3 and 5 (arXiv:1602.07261)",
          "Residual connections make Inception networks train significantly faster at comparable cost, and "
          "scaling the residuals by 0.1-0.3 keeps wide networks stable.",
          _residual_variants, _residual_judge),
    Study("aux", "auxiliary classifiers",
          "Szegedy et al. 2015, Rethinking the Inception Architecture, Sec. 4 (arXiv:1512.00567)",
          "Auxiliary classifiers do not speed up early training; near the end the network with them is "
          "slightly more accurate, acting as a regularizer.",
          _aux_variants, _aux_judge, takes_model=True, refuse=_aux_refuse),
    Study("family", "the six families",
          "GoogLeNet (2014), BN-Inception (2015), Inception-v3 (2015), Inception-v4 and Inception-ResNet-v1/v2 (2016)",
          "Each generation is more accurate than the last (ImageNet top-1 of the public weights: GoogLeNet "
          "69.8%, BN-Inception 73.5%, Inception-v3 77.3%, Inception-v4 80.2%, Inception-ResNet-v2 80.4%).",
          _family_variants, _family_judge),
]}


def get_study(name: str) -> Study:
    if name not in STUDIES:
        hint = closest(name, STUDIES)
        raise UserError(f"unknown study {name!r}" + (f"; did you mean {hint}?" if hint
                                                     else f"; choose from {', '.join(STUDIES)}"))
    return STUDIES[name]


def list_studies() -> list[str]:
    return list(STUDIES)
