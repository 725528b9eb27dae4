"""The lab: plans and their checks, running with failures and resume, results and the report.

Training is replaced by `test_lab_fakes.FakeEngine` (made-up run directories in the engine's
format) and the model measurement by `fake_measure`, so these tests take seconds.
"""
from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import pytest

import inceptionlab.lab.measure as measure_module
import inceptionlab.train as train_module
from inceptionlab.cli import main
from inceptionlab.errors import UserError
from inceptionlab.lab import Plan, Variant, check_plan, load_lab, parse_variant, run_plan
from inceptionlab.lab.report import terminal_table
from inceptionlab.lab.results import aggregate, choose_target, time_to_target
from inceptionlab.lab.runner import prepare_lab, run_state
from test_lab_fakes import FakeEngine, fake_measure, write_fake_run

SMALL = dict(stem="low_res", depth_multiplier=0.125, min_depth=8)


@pytest.fixture
def engine(monkeypatch):
    fake = FakeEngine()
    monkeypatch.setattr(train_module, "train", fake)
    monkeypatch.setattr(measure_module, "measure_model", fake_measure)
    return fake


def plan_of(*names, **kw) -> Plan:
    values = dict(budget={"steps": 100}, model_kwargs=dict(SMALL), train={"limit_per_class": 5})
    values.update(kw)
    return Plan(variants=[Variant(n, n) if isinstance(n, str) else n for n in names], **values)


# ------------------------------------------------------------------ parsing
def test_variant_routes_switches_and_settings():
    v = parse_variant("no_bn:bn_inception:norm=false,lr=0.01")
    assert (v.name, v.model, v.model_kwargs, v.train) == ("no_bn", "bn_inception", {"norm": False}, {"lr": 0.01})
    v = parse_variant("scaled:inception_resnet_v2:residual_scale=[1.0, 0.2, 0.2],steps=50")
    assert v.model_kwargs == {"residual_scale": [1.0, 0.2, 0.2]} and v.train == {"steps": 50}
    assert parse_variant("plain:googlenet").model_kwargs == {}


@pytest.mark.parametrize("text, expected", [
    ("x:googlenet:nrm=false", "did you mean norm"),
    ("x:googlnet", "did you mean googlenet"),
    ("onlyname", "is not name:model"),
    ("x:googlenet:seed=3", "set by the lab"),
    ("x:googlenet:norm", "is not key=value"),
])
def test_variant_errors(text, expected):
    with pytest.raises(UserError, match=expected):
        parse_variant(text)


def test_plan_file_typos_are_caught(tmp_path):
    good = dict(steps=10, models=["googlenet"], runs=[dict(name="v3", model="inception_v3", norm=False, lr=0.01)])
    plan = Plan.from_dict(good)
    assert [v.name for v in plan.variants] == ["googlenet", "v3"]
    assert plan.variants[1].model_kwargs == {"norm": False} and plan.variants[1].train == {"lr": 0.01}
    for bad, hint in [({"epocs": 3}, "did you mean epochs"), ({"runs": [{"model": "inception_v5"}]}, "inception_v"),
                      ({"train": {"bach_size": 3}}, "batch_size"), ({"runs": [{"name": "x"}]}, "model: NAME"),
                      ({"seeds": 0}, "at least 1"), ({"seeds": [1, 1]}, "must differ")]:
        with pytest.raises(UserError, match=hint):
            Plan.from_dict({**good, **bad})
    path = tmp_path / "plan.yaml"
    path.write_text("steps: 10\nmodels: [googlenet\n")
    with pytest.raises(UserError, match="not valid YAML"):
        Plan.from_yaml(path)


def test_plan_round_trips_through_yaml(tmp_path):
    plan = plan_of("googlenet", Variant("no_bn", "bn_inception", {"norm": False}, {"lr": 0.5}), seeds=[0, 3],
                   target=80.0, title="t")
    plan.write_yaml(tmp_path / "plan.yaml")
    again = Plan.from_yaml(tmp_path / "plan.yaml")
    assert again.runs() == plan.runs() and again.target == 80.0 and again.title == "t"
    names = [r.name for r in plan.runs()]
    assert names == ["googlenet-seed0", "no_bn-seed0", "googlenet-seed3", "no_bn-seed3"]
    run = plan.runs()[1]
    assert run.train == {"threads": 1, "steps": 100, "limit_per_class": 5, "lr": 0.5}
    assert run.model_kwargs == {**SMALL, "norm": False}
    # a run with its own budget: its plan.yaml was refused on reading ("'steps' is a budget, not a
    # training setting"), so such a lab could not be resumed
    plan = plan_of(parse_variant("long:googlenet:steps=60,lr=0.1"), "inception_v3")
    plan.write_yaml(tmp_path / "own.yaml")
    again = Plan.from_yaml(tmp_path / "own.yaml")
    assert again.runs() == plan.runs() and again.runs()[0].train["steps"] == 60 and again.runs()[1].train["steps"] == 100


def test_lab_runs_use_one_thread_unless_the_plan_says_otherwise():
    # the README's "one CPU thread each by default" held only on the embedded digits: runs on a
    # folder took torch's default, and their images/s measured the machine's load
    import torch

    from inceptionlab.lab.measure import measure_model

    assert [r.train["threads"] for r in plan_of("googlenet", data="photos").runs()] == [1]
    assert plan_of("googlenet", train={"threads": 2}).runs()[0].train["threads"] == 2
    before = torch.get_num_threads()
    measured = measure_model("googlenet", SMALL, num_classes=2, img_size=28, batch_size=2, batches=1,
                             threads=1)
    assert measured["infer_threads"] == 1 and torch.get_num_threads() == before


def test_lab_inference_speed_is_the_deployed_models(monkeypatch):
    """Timed through optimize_for_inference after two warm-ups (it timed the plain eager model after
    one: GoogLeNet "inferred" slower than it trained)."""
    from inceptionlab.lab import measure as measure_module
    from inceptionlab.tools.fast import InferenceModel

    timed = []
    real = measure_module._time_batches

    def spy(model, x, batches, max_seconds):
        calls = []
        model.register_forward_pre_hook(lambda *_: calls.append(1))
        times = real(model, x, batches, max_seconds)
        timed.append((type(model), len(calls), len(times)))
        return times
    monkeypatch.setattr(measure_module, "_time_batches", spy)
    measure_module.measure_model("googlenet", SMALL, num_classes=2, img_size=28, batch_size=2, batches=3, threads=1)
    assert timed == [(InferenceModel, 2 + 3, 3)]


# ------------------------------------------------------------------ checks before anything runs
@pytest.mark.parametrize("change, expected", [
    (dict(budget={"steps": 0}), "steps=0 must be a whole number above zero"),
    (dict(budget={"minutes": 0.0}), "minutes=0.0 must be a finite number above zero"),
    (dict(budget={}), "no training budget"),
    (dict(budget={"stepz": 2}), r"^unknown budget 'stepz'; did you mean steps\? \(budgets: epochs, steps, minutes\)$"),
    (dict(seeds=[]), "seeds must be a count or a list of integers, got \\[\\]"),
    (dict(seeds=[0, 0]), r"seeds must differ, got \[0, 0\]"),
    (dict(target=150), "target must be a top-1 accuracy"),
    (dict(model_kwargs={"depth_multiplyer": 0.5}), "did you mean depth_multiplier"),
    (dict(model_kwargs={**SMALL, "grid_reduction": "eficient"}), "grid_reduction must be one of"),
    (dict(train={"img_size": 4}), "needs at least"),
    (dict(train={"opt": "adamm"}), "did you mean adamw"),
])
def test_check_plan_rejects(change, expected):
    with pytest.raises(UserError, match=expected):
        check_plan(plan_of("googlenet", "inception_v3", **change))


def test_check_plan_rejects_models_names_and_data(tmp_path):
    with pytest.raises(UserError, match="did you mean inception_resnet_v2"):
        check_plan(plan_of("inception_resnet_v3"))
    with pytest.raises(UserError, match="two runs are named"):
        check_plan(plan_of("googlenet", "googlenet"))
    with pytest.raises(UserError, match="does not exist"):
        check_plan(plan_of("googlenet", data=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        check_plan(plan_of("googlenet", data=str(tmp_path / "empty")))
    check = check_plan(plan_of("googlenet"))
    assert len(check.classes) == 10 and "digits" in check.source


def test_cli_errors_are_one_line_and_nothing_trains(engine, tmp_path, capsys):
    cases = [
        (["compare", "--models", "googlenet,inceptoin_v3", "--steps", "5"], "did you mean inception_v3"),
        (["compare", "--models", "googlenet", "--steps", "0"], "above zero"),
        (["compare", "--models", "googlenet"], "no training budget"),
        (["compare", "--steps", "5"], "nothing to compare"),
        (["compare", "--models", "googlenet", "--steps", "5", "--data", str(tmp_path / "nope")], "does not exist"),
        (["study", "batchnrom"], "did you mean batchnorm"),
        (["study", "batchnorm", "--data", str(tmp_path)],  # (the README's own command had no budget)
         "a study on your own data needs a budget for each of its runs: add e.g. --minutes 5 (or --steps N, "
         "--epochs N); on the embedded digits it is 150 steps"),
        (["compare", "--resume", str(tmp_path / "elsewhere")], "is not a lab folder"),
        # the engine's hints in the form each command takes (compare has no --warmup-steps)
        (["compare", "--models", "googlenet", "--steps", "5", "--set", "warmup_steps=-1"],
         "e.g. --set warmup_steps=500"),
        (["compare", "--models", "googlenet", "--steps", "5", "--threads", "0"], "e.g. --threads 1 on a busy"),
        (["demo", "--steps", "5", "--set", "threads=0", "--out", str(tmp_path / "demo")],
         "e.g. --set threads=1 on a busy"),
        (["demo", "--steps", "5", "--set", "amp=maybe", "--out", str(tmp_path / "demo")], "amp must be true"),
        (["demo", "--set", "epochs=2", "--out", str(tmp_path / "demo")], "budget, not a training setting; pass --epochs N"),
        (["compare", "--models", "googlenet", "--steps", "5", "--set", "freeze_until=mixed_9z"],
         "run googlenet: googlenet has no block 'mixed_9z'; did you mean"),  # every run failed, after the start
    ]
    plan_file = tmp_path / "mine.yaml"
    plan_file.write_text("steps: 5\nmodels: [googlenet]\nmodel_kwrgs: {stem: low_res}\n")
    cases.append((["compare", "--plan", str(plan_file)], "did you mean model_kwargs"))
    good_plan = tmp_path / "good.yaml"  # the mistake is the --set's, not the file's
    good_plan.write_text("steps: 5\nmodels: [googlenet]\n")
    cases.append((["compare", "--plan", str(good_plan), "--set", "lrr=0.5"],
                  "error: --set has an unknown training setting 'lrr'; did you mean lr?"))
    cases.append((["compare", "--plan", str(good_plan), "--set", "learning_rate=0.5"],  # (it offered decay_rate)
                  "error: --set has an unknown training setting 'learning_rate'; did you mean lr?"))
    bad_train = tmp_path / "bad_train.yaml"
    bad_train.write_text("steps: 5\nmodels: [googlenet]\ntrain: {lrr: 0.5}\n")
    cases.append((["compare", "--plan", str(bad_train), "--set", "lr=0.5"],
                  f"error: plan file {bad_train}: train has an unknown training setting 'lrr'"))
    for argv, expected in cases:
        assert main(argv + ["--out", str(tmp_path / "lab")] if argv[0] == "compare" and "--resume" not in argv
                    else argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, (argv, err)
    assert engine.calls == []
    assert not (tmp_path / "lab" / "runs").exists()


# ------------------------------------------------------------------ running
def test_failed_runs_are_reported_and_the_others_complete(engine, tmp_path):
    engine.fates.update({"bn_inception": "raise", "inception_v3": "diverge", "googlenet": 5.0})
    plan = plan_of("googlenet", "bn_inception", "inception_v3", "inception_resnet_v2")
    lines = []
    results = run_plan(plan, tmp_path, log=lines.append)
    status = {r["name"]: r["status"] for r in results["runs"]}
    assert status == {"googlenet": "finished", "bn_inception": "failed", "inception_v3": "diverged",
                      "inception_resnet_v2": "finished"}
    messages = {r["name"]: r["message"] for r in results["runs"]}
    assert messages["bn_inception"] == "RuntimeError: CUDA out of memory (fake)"
    assert "nan" in messages["inception_v3"]
    assert any("FAILED" in line and "the other runs continue" in line for line in lines)
    md = (tmp_path / "report.md").read_text()
    assert "Runs that did not finish" in md and "bn_inception: failed - RuntimeError: CUDA out of memory" in md
    html = (tmp_path / "report.html").read_text()
    assert "CUDA out of memory" in html and "loss became nan" in html
    assert "bn_inception" in terminal_table(results)


def test_the_run_table_shows_the_training_top1_where_runs_logged_it(engine, tmp_path):
    # metrics.csv logs train_top1 now; runs of a version before it have none, and the column stays out
    from inceptionlab.lab.report import make_report, run_rows

    plan = plan_of("googlenet", "inception_v3")
    results = run_plan(plan, tmp_path)
    assert "final train top-1 %" not in run_rows(results)[0]
    summary_path = tmp_path / "runs" / "googlenet" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps(dict(summary, final_train_top1=55.5)))
    results = make_report(plan, tmp_path)
    head, rows = run_rows(results)
    column = head.index("final train top-1 %")
    assert {row[0]: row[column] for row in rows} == {"googlenet": "55.50", "inception_v3": "-"}
    assert "final train top-1 %" in (tmp_path / "report.md").read_text()


def test_results_json_holds_the_metrics_exactly(engine, tmp_path):
    results = run_plan(plan_of("googlenet", "inception_v3"), tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    for run in saved["runs"]:
        with open(tmp_path / run["dir"] / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(run["metrics"]) == len(rows) > 0
        for ours, theirs in zip(run["metrics"], rows):
            assert {k: float(v) for k, v in theirs.items()} == ours
        summary = json.loads((tmp_path / run["dir"] / "summary.json").read_text())
        for key in ("best_top1", "best_top5", "final_val_loss", "steps", "seconds", "train_images_per_sec"):
            assert run[key] == summary[key]
        measured = json.loads((tmp_path / run["dir"] / "lab_measure.json").read_text())
        assert run["macs"] == measured["macs"] and run["params"] == summary["params"]
    assert saved["target_top1"] == results["target_top1"] == round(0.9 * max(r["best_top1"] for r in saved["runs"]), 2)
    assert saved["plan"]["runs"][0]["model"] == "googlenet"


def test_the_report_names_the_files_the_runs_skipped_as_unreadable(engine, tmp_path):
    # summary.json listed them; results.json and the report said nothing, and counted them among the images
    import html

    from helpers import image_folder

    photos = image_folder(tmp_path / "photos", ["a", "b"], 4, junk=1).resolve()
    bad = [str(photos / c / "junk0.png") for c in ("a", "b")]
    engine.skipped.update(googlenet=bad, inception_v3=bad)
    plan = lambda: plan_of("googlenet", "inception_v3", data=str(photos), train={"val_split": 0.25})  # noqa: E731
    run_plan(plan(), tmp_path / "shared")
    saved = json.loads((tmp_path / "shared" / "results.json").read_text())
    assert [run["skipped_files"] for run in saved["runs"]] == [[dict(path=p, reason="not an image") for p in bad]] * 2
    once = ("2 unreadable file(s) skipped by every run: a/junk0.png, b/junk0.png (counted in the images above, "
            "never trained or validated on; all of them, with the reasons, in runs/googlenet/summary.json)")
    report = (tmp_path / "shared" / "report.md").read_text()
    assert f"\n- {once}\n" in report and report.count("unreadable") == 1
    assert f"<li>{html.escape(once)}</li>" in (tmp_path / "shared" / "report.html").read_text()
    # runs that skipped other files: a sentence each, its list capped; a run that skipped none is not named
    engine.skipped = {"googlenet": [str(photos / "a" / f"junk{i}.png") for i in range(7)]}
    run_plan(plan(), tmp_path / "apart")
    report = (tmp_path / "apart" / "report.md").read_text()
    assert ("\n- 7 unreadable file(s) skipped by run googlenet: a/junk0.png, a/junk1.png, a/junk2.png, a/junk3.png, "
            "a/junk4.png and 2 more (counted in the images above, never trained or validated on; all of them, with the "
            "reasons, in runs/googlenet/summary.json)\n") in report
    assert report.count("unreadable") == 1
    engine.skipped = {}
    run_plan(plan(), tmp_path / "clean")
    assert "unreadable" not in (tmp_path / "clean" / "report.md").read_text()


def test_report_html_is_self_contained(engine, tmp_path):
    results = run_plan(plan_of("googlenet", "inception_v3", seeds=[0, 1]), tmp_path)
    html = (tmp_path / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    plots = results["plots"]
    assert {p["file"] for p in plots} >= {"loss_vs_step.png", "loss_vs_time.png", "accuracy_vs_epoch.png",
                                          "accuracy_vs_cost.png"}
    assert len(images) == len(plots) == html.count("<img")
    for plot, data in zip(plots, images):
        assert base64.b64decode(data) == (tmp_path / plot["file"]).read_bytes()
    assert "http://" not in html and "https://" not in html and "src=\"data:" in html
    assert html.count("<table>") >= 3 and "Over seeds" in html
    md = (tmp_path / "report.md").read_text()
    for plot in plots:
        assert f"]({plot['file']})" in md
    seeds = [v for v in results["variants"] if v["variant"] == "googlenet"][0]
    assert seeds["n"] == 2 and seeds["best_top1"]["n"] == 2 and "±" in md
    # each run split with its own seed, and the Data line says so
    assert "stratified, each run's seed (0, 1)" in results["data_source"] and "seed 0" not in md


def test_resume_keeps_finished_runs_and_continues_the_interrupted_one(engine, tmp_path):
    engine.fates["inception_v3"] = "interrupt_once"
    plan = plan_of("googlenet", "inception_v3", "inception_resnet_v2")
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, tmp_path)
    assert engine.calls == [("googlenet", "new"), ("inception_v3", "new")]
    assert run_state(tmp_path / "runs" / "googlenet") == "done"
    assert run_state(tmp_path / "runs" / "inception_v3") == "partial"
    assert run_state(tmp_path / "runs" / "inception_resnet_v2") == "new"
    with pytest.raises(UserError, match="--resume"):
        prepare_lab(plan, tmp_path)
    results = run_plan(load_lab(tmp_path), tmp_path, resume=True)
    assert engine.calls[2:] == [("inception_v3", "resume"), ("inception_resnet_v2", "new")]
    assert all(r["status"] == "finished" for r in results["runs"])
    # a run that died before its first checkpoint starts over, without its leftovers
    run_dir = tmp_path / "runs" / "inception_resnet_v2"
    shutil.rmtree(run_dir)
    write_fake_run(run_dir, status=None, checkpoint=False)
    (run_dir / "leftover.txt").write_text("x")
    run_plan(load_lab(tmp_path), tmp_path, resume=True)
    assert engine.calls[4:] == [("inception_resnet_v2", "new")] and not (run_dir / "leftover.txt").exists()


def test_sigterm_while_a_run_sets_up_interrupts_the_lab_with_its_message(engine, tmp_path):
    # before a run's training loop installs its handlers, SIGTERM ended the lab without a word
    import signal

    engine.fates["inception_v3"] = "sigterm"
    said = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan_of("googlenet", "inception_v3"), tmp_path, log=said.append, resume_hint="inceptionlab demo --resume")
    assert said[-1] == f"interrupted: the runs so far are kept in {tmp_path}; continue with: inceptionlab demo --resume"
    assert signal.getsignal(signal.SIGTERM) is before  # and the lab's handler is gone again
    # each run is told the lab's command, which its own "interrupted" line names
    assert engine.continue_with == "inceptionlab demo --resume"


def test_compare_command_end_to_end_with_the_fake_engine(engine, tmp_path, capsys):
    out = tmp_path / "lab"
    argv = ["compare", "--models", "googlenet", "--variant", "no_bn:bn_inception:norm=false,lr=0.01",
            "--steps", "40", "--seeds", "2", "--model-kwargs", "stem=low_res", "depth_multiplier=0.125",
            "min_depth=8", "--limit-per-class", "5", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "report: " in printed and "no_bn-seed1" in printed
    plan = load_lab(out)
    assert [r.name for r in plan.runs()] == ["googlenet-seed0", "no_bn-seed0", "googlenet-seed1", "no_bn-seed1"]
    assert plan.runs()[1].train["lr"] == 0.01 and plan.runs()[1].model_kwargs["norm"] is False
    assert main(argv) == 2  # the folder holds a compare now
    assert "--resume" in capsys.readouterr().err
    assert main(["compare", "--resume", str(out)]) == 0
    assert main(argv + ["--overwrite"]) == 0


def test_compare_exits_1_when_a_run_failed_but_not_when_one_diverged(engine, tmp_path, capsys):
    argv = ["compare", "--models", "googlenet,inception_v3", "--steps", "40", "--model-kwargs", "stem=low_res",
            "depth_multiplier=0.125", "min_depth=8", "--limit-per-class", "5", "--out", str(tmp_path / "lab")]
    engine.fates.update({"inception_v3": "diverge"})
    assert main(argv) == 0  # a run that blew up is a result of the comparison
    engine.fates.update({"inception_v3": "raise"})
    assert main(argv + ["--overwrite"]) == 1
    printed = capsys.readouterr().out
    assert "1 of 2 run(s) failed (inception_v3)" in printed and "report: " in printed
    results = json.loads((tmp_path / "lab" / "results.json").read_text())
    status = {r["name"]: r["status"] for r in results["runs"]}
    assert status == {"googlenet": "finished", "inception_v3": "failed"}
    assert "inception_v3" in terminal_table(results) and " - " in terminal_table(results).splitlines()[-1]


def test_overwrite_deletes_only_what_a_lab_wrote(engine, tmp_path, capsys):
    # `compare --overwrite` deleted a folder's runs/ (a user's train runs) and every *.png in it
    mine = tmp_path / "proj"
    (mine / "runs" / "myrun").mkdir(parents=True)
    (mine / "runs" / "myrun" / "summary.json").write_text("{}")
    (mine / "diagram.png").write_bytes(b"png")
    argv = ["compare", "--models", "googlenet", "--steps", "5", "--model-kwargs", "stem=low_res",
            "depth_multiplier=0.125", "min_depth=8", "--limit-per-class", "5"]
    assert main(argv + ["--out", str(mine), "--overwrite"]) == 2
    assert f"{mine} holds runs but no plan.yaml, so it is not a lab folder" in capsys.readouterr().err
    assert (mine / "runs" / "myrun" / "summary.json").is_file() and (mine / "diagram.png").is_file()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.md").write_text("my notes")
    assert main(argv + ["--out", str(tmp_path / "notes")]) == 2
    assert (tmp_path / "notes" / "report.md").read_text() == "my notes"
    (tmp_path / "plots").mkdir()  # a plot of the user's own, named as a lab's would be
    (tmp_path / "plots" / "loss_vs_time.png").write_bytes(b"mine")
    assert main(argv + ["--out", str(tmp_path / "plots")]) == 2
    assert "holds loss_vs_time.png but no plan.yaml" in capsys.readouterr().err
    lab = tmp_path / "lab"
    assert main(argv + ["--out", str(lab)]) == 0
    (lab / "diagram.png").write_bytes(b"mine")
    assert main(argv + ["--out", str(lab), "--overwrite"]) == 0
    assert (lab / "diagram.png").read_bytes() == b"mine" and (lab / "report.md").is_file()


# ------------------------------------------------------------------ results arithmetic
def test_target_and_time_to_target():
    records = [dict(name="a", status="finished", best_top1=90.0, metrics=[]),
               dict(name="b", status="diverged", best_top1=99.0, metrics=[])]
    assert choose_target(records, None)[0] == 81.0      # diverged runs do not set the target
    assert choose_target(records, 50)[0] == 50.0
    # a default target at or below chance is none (a run at 10% of 10 classes "reached" it); a tie names the first run
    ten = [str(i) for i in range(10)]
    weak = [dict(name="ok", status="finished", best_top1=11.0, classes=ten, metrics=[]),
            dict(name="v3", status="finished", best_top1=11.0, classes=ten, metrics=[])]
    assert choose_target(weak, None) == (None, "none: 90% of the best run's best (ok: 11.00%) is at or below chance "
                                               "(10% for 10 classes); train longer or set --target")
    weak[0]["best_top1"] = weak[1]["best_top1"] = 40.0
    assert choose_target(weak, None) == (36.0, "top-1 36% = 90% of the best run's best (ok: 40.00%)")
    assert choose_target(weak, 5)[0] == 5.0  # the plan's own target stands
    record = dict(metrics=[dict(step=10, seconds=5.0, top1=40.0), dict(step=20, seconds=9.0, top1=81.0),
                           dict(step=30, seconds=14.0, top1=85.0)])
    assert time_to_target(record, 81.0) == (20, 9.0)
    assert time_to_target(record, 99.0) == (None, None)


def test_aggregate_mean_and_spread():
    records = [dict(variant="a", model="m", seed=s, status="finished", best_top1=v, params=10) for s, v in
               [(0, 80.0), (1, 84.0)]] + [dict(variant="a", model="m", seed=2, status="failed", best_top1=None,
                                               params=10)]
    row = aggregate(records)[0]
    assert (row["n"], row["finished"]) == (3, 2)
    assert row["best_top1"]["mean"] == 82.0 and abs(row["best_top1"]["std"] - 2.8284) < 1e-3
    assert row["params"]["n"] == 3


# ------------------------------------------------------------------ found by using the lab as a user would
def test_values_read_like_a_user_writes_them(tmp_path):
    from inceptionlab.train.config import parse_assignments, parse_value, read_yaml

    # YAML 1.1 reads 1e-3 as a string; "weight_decay must be a number, got '4e-5'" was the result
    assert parse_value("1e-3") == 0.001 and parse_value("4E-5") == 4e-5 and parse_value("-2.5e+1") == -25.0
    assert parse_value("none") is None and parse_value("[0.1, x]") == [0.1, "x"] and parse_value("low_res") == "low_res"
    # a comma-separated piece without "=" continues the value before it (summary read it as a list,
    # compare said "model switch '0.2' is not key=value")
    assert parse_assignments(["residual_scale=0.1,0.2,0.3,lr=1e-3", "stem=low_res"]) == \
        {"residual_scale": [0.1, 0.2, 0.3], "lr": 0.001, "stem": "low_res"}
    with pytest.raises(UserError, match=r"^model switch '0.2' is not key=value"):
        parse_assignments(["0.2,lr=1"])
    with pytest.raises(UserError, match=r"^model switch norm is given twice \(norm=false and norm=true\); keep one"):
        parse_assignments(["norm=false", "norm=true"])  # the last won silently
    with pytest.raises(UserError, match="lr is given twice"):
        parse_variant("a:googlenet:lr=0.1,lr=0.2")
    plan = tmp_path / "plan.yaml"
    plan.write_text("lr: 1e-3\ntrain: {weight_decay: 4e-5}\n")
    assert read_yaml(plan) == {"lr": 0.001, "train": {"weight_decay": 4e-5}}
    plan.write_text("steps: 5\nmodels: [googlenet\n")
    with pytest.raises(UserError, match=r"is not valid YAML at line 3, column 1: "):
        read_yaml(plan)
    from inceptionlab.lab import Plan
    with pytest.raises(UserError, match=r"^plan file \S+plan.yaml is not valid YAML"):  # it said "config file"
        Plan.from_yaml(plan)
    with pytest.raises(UserError, match="is a folder; pass a YAML file"):
        read_yaml(tmp_path)
    plan.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(UserError, match="is not text"):
        read_yaml(plan)
    # a key given twice took the last value without a word
    plan.write_text("models: [googlenet]\ntrain:\n  lr: 0.1\n  batch_size: 8\n  lr: 0.01\n")
    with pytest.raises(UserError, match=r"not valid YAML at line 5, column 3: 'lr' is given twice in one mapping"):
        read_yaml(plan)
    plan.write_text("base: &base {lr: 0.1, batch_size: 8}\ntrain:\n  <<: *base\n  lr: 0.01\n")
    assert read_yaml(plan)["train"] == {"lr": 0.01, "batch_size": 8}  # overriding a merged key is meant
    plan.write_text("model_kwargs: {[1]: 2}\n")  # the repeat check itself raised TypeError: unhashable
    with pytest.raises(UserError, match=r"not valid YAML at line 1, column 16: a key must be a name or a number"):
        read_yaml(plan)
    with pytest.raises(UserError, match=r"seeds must be integers >= 0, got \[-1\]"):
        Plan.from_dict({"models": ["googlenet"], "seeds": [-1]})


def test_command_line_budgets_all_count_and_repeated_options_add_up():
    from inceptionlab.cli import build_parser
    from inceptionlab.commands.compare import merge, plan_values

    # every budget given counts (the first reached ends a run); before, only the last one was kept
    assert merge({"steps": 50, "train": {"lr": 0.1}}, {"steps": 2, "minutes": 0.5, "train": {"seed_x": 1}}) == \
        {"steps": 2, "minutes": 0.5, "train": {"lr": 0.1, "seed_x": 1}}
    assert merge({"steps": 50, "epochs": 3}, {"lr": 1}) == {"steps": 50, "epochs": 3, "lr": 1}
    # a plan's top-level setting (lr: 1e-3 beside train:) beat the command line's --lr / --set lr=
    from inceptionlab.lab import Plan

    merged = merge({"lr": 1e-3, "steps": 2, "models": ["googlenet"], "train": {"batch_size": 16}},
                   {"train": {"lr": 0.002, "batch_size": 4}})
    assert Plan.from_dict(merged).train == {"lr": 0.002, "batch_size": 4}
    # a second --set or --model-kwargs adds to the first instead of replacing it
    args = build_parser("compare").parse_args(["compare", "--models", "googlenet", "--set", "lr=1e-3", "--model-kwargs",
                                      "stem=low_res", "--set", "warmup_steps=3", "--model-kwargs",
                                      "depth_multiplier=0.25", "--epochs", "1", "--steps", "2"])
    assert plan_values(args) == {"epochs": 1.0, "steps": 2, "train": {"lr": 0.001, "warmup_steps": 3},
                                 "model_kwargs": {"stem": "low_res", "depth_multiplier": 0.25}}


@pytest.mark.parametrize("plan_text, expected", [
    ("steps: 2\nmodels: [googlenet]\ntrain: [1, 2]\n", "train must be a mapping of key: value, got [1, 2]"),
    ("steps: 2\nruns: {name: a, model: googlenet}\n", "runs must be a list, one '- name: ..., model: ...' entry"),
    ("models: [googlenet]\ntrain: {steps: 3}\n", "'steps' is a budget, not a training setting; pass --steps N"),
])
def test_malformed_plans_are_named(tmp_path, capsys, plan_text, expected):
    (tmp_path / "plan.yaml").write_text(plan_text)
    assert main(["compare", "--plan", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "lab")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err


def test_demo_settings_are_checked_and_a_compare_is_not_deleted(engine, tmp_path, capsys):
    cases = [(["--set", "bogus=1"], "error: --set has an unknown training setting 'bogus'"),   # was a TypeError
             (["--set", "model=x"], "'model' is set by the lab for every run"),
             (["--minutes", "0"], "minutes=0.0 must be a finite number above zero")]  # was the default budget
    for extra, expected in cases:
        assert main(["demo", "--out", str(tmp_path / "demo")] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    lab = tmp_path / "mine"
    run_plan(plan_of("googlenet"), lab, log=lambda line: None)
    before = sorted(p.relative_to(lab) for p in lab.rglob("*"))
    assert main(["demo", "--out", str(lab), "--steps", "1"]) == 2
    assert "holds a compare or a study, which the demo" in capsys.readouterr().err
    assert sorted(p.relative_to(lab) for p in lab.rglob("*")) == before  # nothing deleted
    assert engine.calls and len(engine.calls) == 1
    # a demo folder is started over, as documented
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "1", "--models", "googlenet"]) == 0
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "1", "--models", "googlenet"]) == 0
    assert load_lab(tmp_path / "demo").title == "Demo: 1 model on the same data and budget"
    # demo --resume ignored these and ran the saved plan
    for extra in (["--steps", "5"], ["--models", "googlenet"], ["--set", "lr=0.5"], ["--seeds", "2"]):
        assert main(["demo", "--out", str(tmp_path / "demo"), "--resume"] + extra) == 2
        assert f"--resume continues the demo saved in {tmp_path / 'demo'}; drop {extra[0]}" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "demo"), "--resume"]) == 0


def test_resume_refuses_options_it_would_ignore(engine, tmp_path, capsys):
    lab = tmp_path / "lab"
    run_plan(plan_of("googlenet"), lab, log=lambda line: None)
    for extra, flag in [(["--lr", "0.5"], "--lr"), (["--title", "x"], "--title"),
                        (["--set", "warmup_steps=3"], "--set warmup_steps=")]:
        assert main(["compare", "--resume", str(lab)] + extra) == 2
        assert f"--resume continues the plan saved in the lab folder; drop {flag} " in capsys.readouterr().err
    assert main(["study", "aux", "--resume", "--out", str(lab), "--lr", "0.5"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    # a budget extends a study's runs, as compare's (its verdicts say "give the runs a larger budget"): taken,
    # and this folder is then refused for what it holds
    assert main(["study", "aux", "--resume", "--out", str(lab), "--steps", "100"]) == 2
    assert capsys.readouterr().err.strip() == f"inceptionlab study: error: {lab} holds a compare, not the aux study"
    # --out beside --resume was ignored: the lab went on in the --resume folder
    assert main(["compare", "--resume", str(lab), "--out", str(tmp_path / "elsewhere")]) == 2
    assert f"--resume {lab} continues the lab in that folder; drop --out {tmp_path / 'elsewhere'}" in \
        capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()
    # the "already used" error gives the study's own resume command, which works
    study_lab = tmp_path / "study"
    assert main(["study", "aux", "--out", str(study_lab), "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["study", "aux", "--out", str(study_lab), "--steps", "2"]) == 2
    assert f"continue them with inceptionlab study aux --resume --out {study_lab}," in capsys.readouterr().err


def test_studies_refuse_options_they_would_ignore(engine, tmp_path, capsys):
    # study batchnorm --model googlenet still trained bn_inception; label_smoothing --smoothing 0.3
    # compared 0 and 0.1 while its report said smoothing=0.3
    cases = [(["study", "batchnorm", "--model", "googlenet"], "the batchnorm study compares models of its own; drop --model"),
             (["study", "family", "--model", "googlenet"], "drop --model"),
             (["study", "label_smoothing", "--smoothing", "0.3"],
              "the label_smoothing study sets smoothing itself in each run; drop it (--smoothing or --set"),
             (["study", "label_smoothing", "--set", "smoothing=0.3"], "drop it (--smoothing or --set smoothing=...)"),
             # a switch an arm sets: the report called aux_logits=False shared while the aux arm ran True
             (["study", "aux", "--model-kwargs", "aux_logits=false"],
              "the aux study sets aux_logits itself in its runs; drop aux_logits from --model-kwargs"),
             (["study", "residual", "--model-kwargs", "residual_scale=0.5"], "sets residual_scale itself")]
    for argv, expected in cases:
        assert main(argv + ["--out", str(tmp_path / "lab")]) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
    assert engine.calls == [] and not (tmp_path / "lab").exists()


def test_the_report_says_what_the_runs_shared():
    from inceptionlab.lab.report import _sameness

    assert _sameness({"seeds": [0], "runs": []}) == \
        "Every run saw the same data and budget, and the same split and augmentation seed."
    assert _sameness({"seeds": [0], "runs": [{"train": {"steps": 5}}]}) == \
        "Every run saw the same data and the same split and augmentation seed; some runs set their own steps (see below)."
    # with --seeds 2 it still said "the same augmentation seed" of runs that differed in seed
    two = _sameness({"seeds": [0, 1], "runs": []})
    assert two.startswith("Every variant saw the same data and budget, and the same seed at each of the 2 seeds")
    assert "augmentation seed and" not in two
    # a run's own budget sits at the run's top level, where the report did not look ("the same budget")
    assert _sameness({"seeds": [0], "runs": [{"name": "a", "model": "googlenet", "train": {}, "steps": 2}]}).endswith(
        "some runs set their own steps (see below).")


def test_shared_settings_leave_out_what_every_run_sets_itself(engine, tmp_path):
    # the batchnorm study listed lr=1.0 as shared, while its arms trained at 1.0, 5.0 and 30.0
    plan = plan_of(Variant("a", "googlenet", train={"lr": 0.5}), Variant("b", "googlenet", train={"lr": 2.0}))
    plan.train.update(lr=1.0, weight_decay=0.0)
    run_plan(plan, tmp_path, log=lambda line: None)
    md = (tmp_path / "report.md").read_text()
    shared = md[md.index("Shared training settings:"):].split(". ")[0]
    assert "weight_decay=0.0" in shared and "lr=" not in shared, shared


def test_an_interrupted_plot_leaves_the_earlier_file(tmp_path, monkeypatch):
    # a Ctrl-C while plotting left half a PNG where the last report's plot had been
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inceptionlab.lab import plots

    (tmp_path / "loss.png").write_bytes(b"earlier")
    fig = plt.figure()

    def cut_short(target, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(fig, "savefig", cut_short)
    with pytest.raises(KeyboardInterrupt):
        plots._save(fig, plt, tmp_path / "loss.png", "Loss", "caption")
    assert (tmp_path / "loss.png").read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]
    assert plots._save(plt.figure(), plt, tmp_path / "loss.png", "Loss", "caption")["file"] == "loss.png"
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_runs_own_budget_replaces_the_shared_one_and_a_broken_plan_is_named(engine, tmp_path, capsys):
    # both were kept, so the shared steps=2 ended a run whose own budget was epochs=0.04
    runs = plan_of(Variant("a", "googlenet", train={"epochs": 0.04}), "googlenet", budget={"steps": 2}).runs()
    assert runs[0].train["epochs"] == 0.04 and "steps" not in runs[0].train
    assert runs[1].train["steps"] == 2 and "epochs" not in runs[1].train
    # a train: that is no mapping was hidden by any training flag on the command line
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [googlenet]\nsteps: 1\ntrain: [1, 2]\n")
    assert main(["compare", "--plan", str(bad), "--out", str(tmp_path / "q"), "--threads", "1"]) == 2
    assert "train must be a mapping of key: value, got [1, 2]" in capsys.readouterr().err
    assert engine.calls == [] and not (tmp_path / "q").exists()
    # a study pointed at a compare's folder advised `study --resume`, which refuses a compare
    lab = tmp_path / "lab"
    run_plan(plan_of("googlenet"), lab, log=lambda line: None)
    assert main(["study", "aux", "--out", str(lab), "--steps", "2"]) == 2
    assert f"{lab} already holds a compare; continue it with inceptionlab compare --resume {lab}," in \
        capsys.readouterr().err


def test_report_flags_unscored_and_unfinished_runs_and_escapes_markdown(engine, tmp_path):
    from inceptionlab.lab.report import fmt, make_report, number

    plan = plan_of("googlenet", "bn_inception", seeds=[0, 1], title='<script>x</script> R&D "Ünï"')
    engine.fates["bn_inception-seed1"] = "diverge"
    run_plan(plan, tmp_path)
    write_fake_run(tmp_path / "runs" / "googlenet-seed1", steps=0, evals=0, seed=1)  # finished, never evaluated
    results = make_report(load_lab(tmp_path), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith('# &lt;script>x&lt;/script> R&amp;D "Ünï"\n')  # a Markdown viewer would have run it
    assert "&lt;script&gt;x&lt;/script&gt; R&amp;D" in (tmp_path / "report.html").read_text()
    assert ("## Finished runs without an evaluation\n\n- googlenet-seed1: 0 steps, no validation score; the "
            "tables' means leave it out") in md
    row = next(line for line in md.splitlines() if line.startswith("| googlenet | googlenet | 2 / 2 |"))
    best = results["variants"][0]["best_top1"]["mean"]
    assert f"| {best:.2f} (n=1) |" in row  # a mean of one run, in a row that says 2 finished
    cost = next(p for p in results["plots"] if p["file"] == "accuracy_vs_cost.png")
    assert cost["caption"].endswith("hollow markers: runs that did not finish (diverged or failed), whose best "
                                    "is no result.")
    assert (fmt("final_val_loss", 1.0413105e23), fmt("final_val_loss", 2.5), fmt("macs", 5.713e9)) == \
        ("1.041e+23", "2.5000", "5.71G")
    assert [number(v) for v in (20.0, -0.7826, 1.2345e7, 0.000123, 0.0)] == ["20.00", "-0.78", "1.23e+07",
                                                                               "0.000123", "0.00"]


# ------------------------------------------------------------------ found by a tester
SMALL_ARGS = ["--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8"]


@pytest.fixture
def configs(engine, monkeypatch):
    """The TrainConfig of every run the fake engine starts."""
    started = []

    def recording(cfg=None, **kwargs):
        if cfg is not None:
            started.append(cfg)
        return engine(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", recording)
    return started


def test_compare_on_the_digits_trains_with_the_small_data_settings(configs, tmp_path):
    # compare without --data flipped the digits and cropped them to 8% (TrainConfig's ImageNet
    # defaults), where the demo and the studies use SMALL_TRAIN (no flips: digits are not mirror-symmetric)
    from helpers import image_folder

    from inceptionlab.lab.demo import SMALL_TRAIN

    argv = ["compare", "--models", "googlenet", "--steps", "3", *SMALL_ARGS]
    assert main(argv + ["--out", str(tmp_path / "digits")]) == 0
    cfg = configs[-1]
    assert (cfg.hflip, list(cfg.crop_scale), cfg.opt, cfg.lr, cfg.batch_size, cfg.limit_per_class, cfg.val_split) == \
        (False, [0.6, 1.0], "adamw", 0.002, 32, 100, 0.06) == tuple(SMALL_TRAIN[k] for k in (
            "hflip", "crop_scale", "opt", "lr", "batch_size", "limit_per_class", "val_split"))
    # the user's values win: flags, --set, and a plan file's own (at its top level or under train:)
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("steps: 3\nmodels: [googlenet]\nbatch_size: 16\ntrain: {opt: sgd}\n")
    assert main(["compare", "--plan", str(plan_file), *SMALL_ARGS, "--lr", "0.01", "--limit-per-class", "10",
                 "--set", "hflip=true", "--out", str(tmp_path / "mine")]) == 0
    cfg = configs[-1]
    assert (cfg.hflip, list(cfg.crop_scale), cfg.opt, cfg.lr, cfg.batch_size, cfg.limit_per_class) == \
        (True, [0.6, 1.0], "sgd", 0.01, 16, 10)
    # on one's own folder, the engine's defaults as before
    photos = image_folder(tmp_path / "photos", ["a", "b"], 5)
    assert main(argv + ["--data", str(photos), "--val-split", "0.4", "--img-size", "32",
                        "--out", str(tmp_path / "photos_lab")]) == 0
    assert (configs[-1].hflip, list(configs[-1].crop_scale), configs[-1].limit_per_class) == (True, [0.08, 1.0], None)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="fp16 autocast works on CUDA")
def test_fp16_on_a_cpu_is_refused_before_the_lab_starts(engine, tmp_path, capsys):
    # train --amp fp16 refused it up front; the lab started, failed the run, wrote a report and exited 1
    for argv in (["compare", "--models", "googlenet", "--steps", "3", *SMALL_ARGS, "--set", "amp=fp16"],
                 ["demo", "--steps", "3", "--models", "googlenet", "--set", "amp=fp16"],
                 ["study", "aux", "--steps", "3", "--set", "amp=fp16"],
                 ["compare", "--variant", "half:googlenet:amp=fp16", "--steps", "3", *SMALL_ARGS]):
        name = "half" if "--variant" in argv else "googlenet" if argv[0] != "study" else "aux"
        assert main(argv + ["--out", str(tmp_path / "lab")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"inceptionlab {argv[0]}: error: run ") and len(err.splitlines()) == 1, err
        assert err.endswith(": fp16 autocast needs a CUDA device; use --set amp=bf16 on the CPU"), err
        assert name in err or argv[0] == "study"
    assert engine.calls == [] and not (tmp_path / "lab").exists()


def test_a_lab_inside_its_data_folder_is_refused_before_anything_is_written(engine, tmp_path, capsys):
    # each run failed with train's refusal, after plan.yaml and the report had gone among the images
    from helpers import image_folder

    photos = image_folder(tmp_path / "photos", ["a", "b"], 3)
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    assert main(["compare", "--models", "googlenet", "--steps", "1", "--data", str(photos),
                 "--out", str(photos / "lab")]) == 2
    assert capsys.readouterr().err == (f"inceptionlab compare: error: the output folder {photos / 'lab'} is inside "
                                       f"the data folder {photos}; pass an --out outside it\n")
    assert sorted(p.relative_to(photos) for p in photos.rglob("*")) == before and engine.calls == []


def test_a_class_or_channel_count_the_data_does_not_have_is_refused_before_the_lab_starts(engine, tmp_path, capsys):
    # the plan check built the model with the user's num_classes ahead of the data's: it passed, every run
    # failed at its start, the advised --resume failed the same way, and the table showed the 7-class params
    from helpers import image_folder

    photos = image_folder(tmp_path / "photos", ["a", "b", "c", "d"], 3)
    compare = ["compare", "--steps", "3", "--img-size", "32", "--data", str(photos), "--val-split", "0.34"]
    classes = "model_kwargs num_classes=7 but the data has 4 classes; drop num_classes (it is taken from the data)"
    channels = ("model_kwargs in_chans=2 but the images have 3 channels; drop in_chans, or pass in_chans=1 to "
                "train on gray images")
    cases = [
        (compare + ["--models", "googlenet", *SMALL_ARGS, "num_classes=7"], f"run googlenet: {classes}"),
        (compare + ["--variant", "seven:googlenet:num_classes=7", *SMALL_ARGS], f"run seven: {classes}"),
        (compare + ["--models", "googlenet", *SMALL_ARGS, "in_chans=2"], f"run googlenet: {channels}"),
        (["study", "aux", "--data", str(photos), "--steps", "3", "--img-size", "32", "--val-split", "0.34",
          *SMALL_ARGS, "num_classes=7"], f"run no_aux: {classes}"),
        # --set offered "did you mean limit_per_class?"
        (compare + ["--models", "googlenet", *SMALL_ARGS, "--set", "num_classes=7"],
         "--set: 'num_classes' is a switch of the models, not a training setting; leave it out: it is taken from "
         "the data"),
        (compare + ["--models", "googlenet", "--set", "stem=low_res"],
         "--set: 'stem' is a switch of the models, not a training setting; pass --model-kwargs stem=VALUE (in a plan "
         "file, model_kwargs: at the top level or in a run)"),
    ]
    for argv, expected in cases:
        assert main(argv + ["--out", str(tmp_path / "lab")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"inceptionlab {argv[0]}: error: ") and err.endswith(expected), err
        assert len(err.splitlines()) == 1, err
    with pytest.raises(UserError, match="^run googlenet: model_kwargs num_classes=7 but the data has 10 classes"):
        check_plan(plan_of(Variant("googlenet", "googlenet", {"num_classes": 7})))  # a plan file's run
    assert engine.calls == [] and not (tmp_path / "lab").exists()
    # the count the data has, and gray input, are accepted
    assert main(compare + ["--models", "googlenet", *SMALL_ARGS, "num_classes=4", "in_chans=1",
                           "--out", str(tmp_path / "ok")]) == 0


def test_a_runs_measured_size_is_the_data_classes(tmp_path):
    # measured with {"num_classes": classes, **model_kwargs}: a run given num_classes=7 showed the 7-class count
    from inceptionlab.lab.measure import measure_model

    def params(**kwargs):
        return measure_model("googlenet", {**SMALL, **kwargs}, num_classes=4, img_size=28, batch_size=1,
                             batches=1, threads=1)["params"]

    from inceptionlab.models import create_model

    seven = sum(p.numel() for p in create_model("googlenet", num_classes=7, **SMALL).parameters())
    assert params(num_classes=7) == params() < seven


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots would save, kept open for their axes until the test ends."""
    import matplotlib.pyplot as plt

    from inceptionlab.lab import plots

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, plt, path, title, caption: drawn.append(fig)
                        or dict(file=path.name, title=title, caption=caption))
    yield drawn
    for fig in drawn:
        plt.close(fig)


def _record(name, losses, val_losses, *, variant=None, seed=0, color="#1f77b4", top1=None):
    top1 = top1 or [10.0 + i for i in range(len(val_losses))]
    return dict(name=name, variant=variant or name, seed=seed, color=color, status="finished",
                train_curve=[dict(step=i + 1, seconds=0.5 * (i + 1), loss=v) for i, v in enumerate(losses)],
                metrics=[dict(step=2.0 * (i + 1), seconds=1.0 * (i + 1), epoch=0.5 * (i + 1), val_loss=v,
                              top1=t, top5=None) for i, (v, t) in enumerate(zip(val_losses, top1))])


def test_loss_plots_fit_the_axis_to_the_losses(figures, tmp_path):
    # with every loss near 2.3 the axis ran from 0 to 4.6 and the runs drew as one flat line
    from inceptionlab.lab import plots

    near = [_record("a", [2.31, 2.30, 2.29, 2.28], [2.30, 2.27]),
            _record("b", [2.32, 2.31, 2.31, 2.30], [2.31, 2.29], color="#ff7f0e")]
    plots.plot_loss(dict(runs=near, seeds=[0]), tmp_path, "step")
    ax = figures[-1].axes[0]
    low, high = ax.get_ylim()
    span = 2.32 - 2.27  # of the drawn values (the training curve is smoothed: its first value is the raw one)
    assert ax.get_yscale() == "linear" and low == pytest.approx(2.27 - 0.05 * span) and \
        high == pytest.approx(2.32 + 0.05 * span)
    assert not ax.texts
    # a run that blew up: its losses are off the chart, which says so, and the others keep their range
    blown = _record("c", [2.3, 2.4, 5e3, 1e23], [2.3, 1e20], color="#2ca02c")
    plots.plot_loss(dict(runs=near + [blown], seeds=[0]), tmp_path, "step")
    ax = figures[-1].axes[0]
    assert ax.get_yscale() == "linear" and ax.get_ylim()[1] < 2.5
    assert [t.get_text() for t in ax.texts] == ["off the chart: c (up to 1e+22)"]  # (the smoothed curve's)
    # losses over a wide range: a log scale, fitted with the same margin
    wide = [_record("a", [2.3, 1.0, 0.3, 0.05], [1.5, 0.04])]
    plots.plot_loss(dict(runs=wide, seeds=[0]), tmp_path, "seconds")
    ax = figures[-1].axes[0]
    smoothed_low = min(plots._smooth([2.3, 1.0, 0.3, 0.05]))
    pad = (2.3 / 0.04) ** 0.05
    assert ax.get_yscale() == "log" and smoothed_low > 0.04
    assert ax.get_ylim() == pytest.approx((0.04 / pad, 2.3 * pad))


def test_seeds_of_a_variant_have_their_own_style_in_the_plots(figures, tmp_path):
    # the seeds of a variant shared colour, line and marker, and the legend had one entry per variant
    from inceptionlab.lab import plots

    runs = [_record(f"{v}-seed{s}", [2.3, 2.0, 1.8], [2.1, 1.7], variant=v, seed=s, color=c)
            for s in (0, 7) for v, c in (("googlenet", "#1f77b4"), ("v3", "#ff7f0e"))]
    results = dict(runs=runs, seeds=[0, 7], target_top1=11.0)
    plots.plot_loss(results, tmp_path, "step")
    ax = figures[-1].axes[0]
    styles = [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in ax.lines]
    # per run: the training curve (solid) and the validation points (dashed), marked by seed
    assert styles == [("#1f77b4", "o", "-"), ("#1f77b4", "o", "--"), ("#ff7f0e", "o", "-"), ("#ff7f0e", "o", "--"),
                      ("#1f77b4", "s", "-"), ("#1f77b4", "s", "--"), ("#ff7f0e", "s", "-"), ("#ff7f0e", "s", "--")]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["googlenet", "v3", "seed 0", "seed 7"]
    assert [h.get_marker() for h in legend.legend_handles][2:] == ["o", "s"]
    plots.plot_accuracy(results, tmp_path)
    top1 = figures[-1].axes[0]
    styles = [(line.get_color(), line.get_marker(), line.get_linestyle()) for line in top1.lines[:4]]
    assert styles == [("#1f77b4", "o", "-"), ("#ff7f0e", "o", "-"), ("#1f77b4", "s", "--"), ("#ff7f0e", "s", "--")]
    legend = top1.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["googlenet", "v3", "seed 0", "seed 7", "target 11%"]
    assert [(h.get_marker(), h.get_linestyle()) for h in legend.legend_handles][2:4] == [("o", "-"), ("s", "--")]
    # one seed: one entry per variant, as before
    plots.plot_accuracy(dict(runs=runs[:2], seeds=[0]), tmp_path)
    assert [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()] == ["googlenet", "v3"]


def test_the_accuracy_plot_shows_the_training_top1_faint(figures, tmp_path):
    # metrics.csv logs train_top1: beside each run's validation top-1, faint, so overfitting shows
    from inceptionlab.lab import plots

    logged = _record("a", [2.3, 2.0], [2.1, 1.7], top1=[20.0, 30.0])
    for row, train_top1 in zip(logged["metrics"], (25.0, 60.0)):
        row["train_top1"] = train_top1
    older = _record("b", [2.3, 2.0], [2.1, 1.7], color="#ff7f0e")  # a run of a version that did not log it
    plots.plot_accuracy(dict(runs=[logged, older], seeds=[0]), tmp_path)
    top1 = figures[-1].axes[0]
    faint = [line for line in top1.lines if line.get_alpha() == 0.45]
    assert [(line.get_color(), list(line.get_ydata())) for line in faint] == [("#1f77b4", [25.0, 60.0])]
    assert [t.get_text() for t in top1.get_legend().get_texts()] == ["a", "b", "training top-1 (faint)"]


def test_a_labs_initial_weights_are_kept_absolute_for_resume_elsewhere(engine, tmp_path, monkeypatch):
    # `compare --set weights=w.pth` kept the relative path in plan.yaml: --resume from another folder failed
    import yaml

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "w.pth").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path / "work")
    assert main(["compare", "--models", "googlenet", "--steps", "40", *SMALL_ARGS, "--set", "weights=w.pth",
                 "--variant", "plain:googlenet:weights=none", "--out", str(tmp_path / "lab")]) == 0
    saved = yaml.safe_load((tmp_path / "lab" / "plan.yaml").read_text())
    assert saved["train"]["weights"] == str(tmp_path / "work" / "w.pth")
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--resume", str(tmp_path / "lab"), "--steps", "60"]) == 0


def test_a_run_from_scratch_leaves_the_shared_fine_tuning_settings_out(configs, tmp_path, capsys):
    # the README's scratch run kept the shared freeze_bn=true and body_lr_scale=0.1: random weights, BN frozen
    # at its random start, the body at a tenth of the rate
    (tmp_path / "w.pth").write_bytes(b"weights")
    out = tmp_path / "lab"
    assert main(["compare", "--models", "googlenet", "--steps", "40", *SMALL_ARGS, "--set",
                 f"weights={tmp_path / 'w.pth'}", "body_lr_scale=0.1", "freeze_bn=true", "freeze_until=mixed_3b",
                 "--variant", "scratch:googlenet:weights=none",
                 "--variant", "scratch_bn_frozen:googlenet:weights=none,freeze_bn=true", "--out", str(out)]) == 0
    started = {Path(cfg.out).name: (cfg.weights, cfg.freeze_bn, cfg.freeze_until, cfg.body_lr_scale)
               for cfg in configs}
    assert started == {"googlenet": (str(tmp_path / "w.pth"), True, "mixed_3b", 0.1),
                       "scratch": (None, False, None, 1.0),
                       "scratch_bn_frozen": (None, True, None, 1.0)}  # what a run sets itself stays
    printed = capsys.readouterr().out
    assert ("[2/3] scratch: googlenet (stem=low_res, depth_multiplier=0.125, min_depth=8); from scratch, without "
            "the shared freeze_bn, freeze_until, body_lr_scale\n") in printed
    assert "[3/3] scratch_bn_frozen: googlenet (stem=low_res, depth_multiplier=0.125, min_depth=8); from scratch, " \
           "without the shared freeze_until, body_lr_scale\n" in printed
    assert "| scratch | googlenet | - | weights=None (from scratch, without the shared freeze_bn, freeze_until, " \
           "body_lr_scale) | 0 |" in (out / "report.md").read_text()


def test_a_lab_is_not_written_into_a_training_run(engine, tmp_path, capsys):
    # `demo --out RUN` wrote plan.yaml, the report and runs/ beside the run's own files
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: googlenet\n")
    (run / "metrics.csv").write_text("epoch,step\n")
    assert main(["compare", "--models", "googlenet", "--steps", "40", *SMALL_ARGS, "--out", str(run)]) == 2
    assert f"{run} holds a training run (its config.yaml and metrics.csv), not a lab" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "metrics.csv"]


def test_resume_starts_failed_runs_again(engine, tmp_path, capsys):
    # a failed run (out of memory) was "kept from before (failed)" on every --resume, exit 1, and
    # nothing said how to run it again
    out = tmp_path / "lab"
    engine.fates.update({"inception_v3": "raise", "bn_inception": "diverge"})
    argv = ["compare", "--models", "googlenet,inception_v3,bn_inception", "--steps", "40", *SMALL_ARGS,
            "--out", str(out)]
    assert main(argv) == 1
    assert f"1 of 3 run(s) failed (inception_v3); their reasons are in the report; start them again with " \
           f"inceptionlab compare --resume {out}; exit status 1" in capsys.readouterr().out
    assert run_state(out / "runs" / "inception_v3") == "failed" and run_state(out / "runs" / "bn_inception") == "done"
    del engine.fates["inception_v3"]
    assert main(["compare", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inception_v3 (stem=low_res, depth_multiplier=0.125, min_depth=8) - failed before (RuntimeError: CUDA " \
           "out of memory (fake)); starting it again" in printed
    assert "bn_inception (stem=low_res, depth_multiplier=0.125, min_depth=8) - kept from before (diverged" in printed
    assert engine.calls[3:] == [("inception_v3", "new")]  # the diverged run is a result, kept
    results = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["finished", "finished", "diverged"]
    # a run whose engine wrote the failure itself (summary.json status "failed") starts again too
    write_fake_run(out / "runs" / "googlenet", status="failed", message="RuntimeError: bad image")
    assert run_state(out / "runs" / "googlenet") == "failed"
    assert main(["compare", "--resume", str(out)]) == 0
    assert "googlenet (stem=low_res, depth_multiplier=0.125, min_depth=8) - failed before (RuntimeError: bad " \
           "image); starting it again" in capsys.readouterr().out
    assert engine.calls[4:] == [("googlenet", "new")]


def test_overwrite_keeps_a_users_files_in_runs(engine, tmp_path, capsys):
    # --overwrite deleted the whole runs/ folder, runs/mystuff/keep.txt with it
    lab = tmp_path / "lab"
    argv = ["compare", "--steps", "5", *SMALL_ARGS, "--out", str(lab)]
    assert main(argv + ["--models", "googlenet,inception_v3"]) == 0
    (lab / "runs" / "mystuff").mkdir()
    (lab / "runs" / "mystuff" / "keep.txt").write_text("mine")
    (lab / "runs" / "notes.txt").write_text("mine too")
    assert main(argv + ["--models", "bn_inception", "--overwrite"]) == 0
    assert sorted(p.name for p in (lab / "runs").iterdir()) == ["bn_inception", "mystuff", "notes.txt"]
    assert (lab / "runs" / "mystuff" / "keep.txt").read_text() == "mine"
    # the demo starts its folder over the same way
    demo = tmp_path / "demo"
    assert main(["demo", "--steps", "1", "--models", "googlenet", "--out", str(demo)]) == 0
    (demo / "runs" / "keep.txt").write_text("mine")
    assert main(["demo", "--steps", "1", "--models", "inception_v3", "--out", str(demo)]) == 0
    assert sorted(p.name for p in (demo / "runs").iterdir()) == ["inception_v3", "keep.txt"]


def test_a_refused_study_says_only_why(engine, tmp_path, capsys):
    # study aux --out <a compare> printed the study's claim, then refused
    from inceptionlab.lab import get_study

    lab = tmp_path / "lab"
    run_plan(plan_of("googlenet"), lab, log=lambda line: None)
    assert main(["study", "aux", "--out", str(lab), "--steps", "2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"inceptionlab study: error: {lab} already holds a compare")
    assert main(["study", "aux", "--out", str(tmp_path / "aux"), "--steps", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    study = get_study("aux")
    assert lines[0] == f"claim ({study.paper}): {study.claim}" and " run(s), steps 2 each, on " in lines[1]
    assert sum(line.startswith("claim (") for line in lines) == 1


def test_compare_resume_extends_the_budget_of_every_run(engine, tmp_path, capsys):
    # compare --resume LAB --steps N said "drop --steps", where train --resume RUN --steps N extends a run
    resumed = engine.extended
    out = tmp_path / "lab"
    engine.fates["bn_inception"] = "diverge"
    assert main(["compare", "--models", "googlenet,bn_inception", "--steps", "40", *SMALL_ARGS,
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", "--resume", str(out), "--steps", "30"]) == 2  # no extension: refused, nothing changed
    assert capsys.readouterr().err.strip() == (
        "inceptionlab compare: error: run googlenet is already at step 40 (epoch 4, 0.33 minutes), which steps 30 "
        "does not extend; pass a budget beyond that")
    assert load_lab(out).budget == {"steps": 40} and resumed == []
    assert main(["compare", "--resume", str(out), "--steps", "100"]) == 0
    printed = capsys.readouterr().out
    assert "googlenet (stem=low_res, depth_multiplier=0.125, min_depth=8) - extending its budget: steps 40 -> " \
           "steps 100" in printed
    assert "bn_inception (stem=low_res, depth_multiplier=0.125, min_depth=8) - kept from before (diverged" in printed
    assert resumed == [("googlenet", {"steps": 100})]  # a diverged run is a result: not extended
    assert load_lab(out).budget == {"steps": 100}  # what a later --resume continues, and the report says
    results = json.loads((out / "results.json").read_text())
    assert results["budget"] == {"steps": 100} and results["runs"][0]["steps"] == 100
    assert main(["compare", "--resume", str(out)]) == 0 and len(resumed) == 1  # nothing left to extend
    assert "googlenet (stem=low_res, depth_multiplier=0.125, min_depth=8) - kept from before (finished" in \
        capsys.readouterr().out
    assert main(["compare", "--resume", str(out), "--steps", "200", "--lr", "0.1"]) == 2
    assert "drop --lr (only --epochs, --steps and --minutes may change: a larger budget extends every run; --data, " \
           "where the lab's data folder moved; to change the plan, start over with --overwrite)" in \
        capsys.readouterr().err


def test_a_run_extended_on_resume_is_calibrated_again(engine, tmp_path, monkeypatch):
    # its lab_calibration.json was kept: the verdict, report and calibration.png gave the shorter model's ECE
    calibrated = []

    def confident_by_step(run_dir, data=None):  # every image right at confidence 1 - steps/1000: ECE = steps/10 %
        steps = json.loads((Path(run_dir) / "summary.json").read_text())["steps"]
        calibrated.append((Path(run_dir).name, steps))
        return [1 - steps / 1000] * 4, [True] * 4

    monkeypatch.setattr(measure_module, "predict_val", confident_by_step)
    lab = tmp_path / "lab"
    results = run_plan(plan_of("googlenet", budget={"steps": 40}), lab, calibrate=True, log=lambda line: None)
    assert results["runs"][0]["ece"] == pytest.approx(4.0)
    extended = load_lab(lab)
    extended.budget = {"steps": 100}
    results = run_plan(extended, lab, resume=True, calibrate=True, log=lambda line: None)
    assert engine.extended == [("googlenet", {"steps": 100})]
    assert results["runs"][0]["ece"] == pytest.approx(10.0)
    assert json.loads((lab / "results.json").read_text())["runs"][0]["ece"] == pytest.approx(10.0)
    run_plan(load_lab(lab), lab, resume=True, calibrate=True, log=lambda line: None)  # kept: not measured again
    assert calibrated == [("googlenet", 40), ("googlenet", 100)]


def test_a_lab_whose_data_folder_moved_resumes_with_data(engine, tmp_path, capsys):
    # compare --resume said the folder "does not exist; ... or leave --data out", and refused --data: such a lab
    # could not be resumed, where train --resume RUN --data DIR continues a run whose folder moved
    import yaml
    from helpers import image_folder

    photos, lab = image_folder(tmp_path / "photos", ["a", "b"], 5), tmp_path / "lab"
    assert main(["compare", "--models", "googlenet", "--steps", "40", *SMALL_ARGS, "--img-size", "32",
                 "--data", str(photos), "--out", str(lab)]) == 0
    moved = photos.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["compare", "--resume", str(lab)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"inceptionlab compare: error: the lab's data folder {photos.resolve()} is gone; put it back there, or pass "
        f"the folder's new place: inceptionlab compare --resume {lab} --data NEW_PATH")
    other = image_folder(tmp_path / "other", ["a", "b", "c"], 5)
    assert main(["compare", "--resume", str(lab), "--data", str(other)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"inceptionlab compare: error: --data {other.resolve()} holds other classes (a, b, c) than the lab's runs "
        f"trained on (a, b); pass the folder the lab's data moved to, or start a new lab on this data with another "
        f"--out")
    assert load_lab(lab).data == str(photos.resolve()) and engine.calls == [("googlenet", "new")]  # nothing changed
    assert main(["compare", "--resume", str(lab), "--data", str(moved), "--steps", "60"]) == 0
    assert load_lab(lab).data == str(moved.resolve())  # what later resumes continue with
    assert engine.extended == [("googlenet", {"steps": 60})]  # the engine resumed the run on the moved folder
    assert yaml.safe_load((lab / "runs" / "googlenet" / "config.yaml").read_text())["data"] == str(moved.resolve())
    # a study and the demo take it too, and their "gone" names their own resume command
    study, demo = tmp_path / "study", tmp_path / "demo"
    photos = image_folder(tmp_path / "photos", ["a", "b"], 5)
    assert main(["study", "aux", "--steps", "2", *SMALL_ARGS, "--img-size", "32", "--data", str(photos),
                 "--out", str(study)]) == 0
    assert main(["demo", "--steps", "1", "--models", "googlenet", "--set", "img_size=32", "--data", str(photos),
                 "--out", str(demo)]) == 0
    moved = photos.rename(tmp_path / "moved_again")
    capsys.readouterr()
    for resume in (["study", "aux", "--resume", "--out", str(study)], ["demo", "--resume", "--out", str(demo)]):
        assert main(resume) == 2
        assert capsys.readouterr().err.strip().endswith(
            f"put it back there, or pass the folder's new place: inceptionlab {' '.join(resume[:-2])} --out "
            f"{resume[-1]} --data NEW_PATH")
        assert main(resume + ["--data", str(moved)]) == 0
        assert load_lab(resume[-1]).data == str(moved.resolve())


def test_what_the_lab_cannot_take_is_refused_before_anything_is_written(engine, tmp_path, capsys):
    # aux_weight against the aux heads: the lab was written, every run failed with train's refusal, and the
    # "--resume" it advised failed the same way; a flag and --set for one setting trained at --set's value;
    # --set seed=4 and the other lab-owned settings did not say where they go
    compare = ["compare", "--models", "googlenet", "--steps", "3", *SMALL_ARGS]
    cases = [
        (compare + ["aux_logits=true", "--set", "aux_weight=[0.3,0.1,0.2]"],
         "run googlenet: aux_weight gives 3 weights for googlenet's 2 aux head(s); give one number for all, "
         "or one per head"),
        (compare + ["--set", "aux_weight=0.3"],
         "aux_weight 0.3 has no effect: no run of the plan has aux heads; add --model-kwargs aux_logits=true, "
         "or leave aux_weight out"),
        (["compare", "--variant", "a:googlenet:aux_weight=0.3", "--steps", "3", *SMALL_ARGS],
         "run a: aux_weight 0.3 has no effect: googlenet has no aux heads here; add --model-kwargs "
         "aux_logits=true, or leave aux_weight out"),
        (["study", "family", "--steps", "3", "--set", "aux_weight=0.3"],
         "aux_weight 0.3 has no effect: no run of the plan has aux heads; add --model-kwargs aux_logits=true, "
         "or leave aux_weight out"),
        (compare + ["--lr", "0.02", "--set", "lr=0.01"],
         "setting lr is given twice (--lr 0.02 and --set lr=0.01); keep one"),
        (["study", "aux", "--img-size", "32", "--set", "img_size=64"],
         "setting img_size is given twice (--img-size 32 and --set img_size=64); keep one"),
        (compare + ["--set", "seed=4"], "--set: 'seed' is set by the lab for every run and cannot be set here; "
                                        "pass --seeds N for seeds 0..N-1 (in a plan file, seeds: N or seeds: [0, 7])"),
        (compare + ["--set", "data=photos"], "--set: 'data' is set by the lab for every run and cannot be set here; "
                                             "pass --data DIR (in a plan file, data: at the top level)"),
        (compare + ["--set", "model_kwargs={norm: false}"],
         "--set: 'model_kwargs' is set by the lab for every run and cannot be set here; pass --model-kwargs "
         "KEY=VALUE (in a plan file, model_kwargs: at the top level or in a run)"),
        (compare + ["--set", "out=x"], "--set: 'out' is set by the lab for every run and cannot be set here; "
                                       "pass --out DIR"),
        (["compare", "--variant", "a:googlenet:seed=3", "--steps", "3"],
         "variant 'a': 'seed' is set by the lab for every run and cannot be varied; pass --seeds N for seeds "
         "0..N-1 (in a plan file, seeds: N or seeds: [0, 7])"),
    ]
    for argv, expected in cases:
        assert main(argv + ["--out", str(tmp_path / "lab")]) == 2, argv
        assert capsys.readouterr().err.strip() == f"inceptionlab {argv[0]}: error: {expected}"
    assert main(["demo", "--steps", "3", "--set", "seed=4", "--out", str(tmp_path / "lab")]) == 2
    assert capsys.readouterr().err.strip().endswith("'seed' is set by the lab for every run and cannot be set "
                                                    "here; pass --seeds N for seeds 0..N-1 (in a plan file, "
                                                    "seeds: N or seeds: [0, 7])")
    assert engine.calls == [] and not (tmp_path / "lab").exists()
    # aux heads that take the weights: accepted; a shared aux_weight goes where a run has aux heads
    assert main(compare + ["aux_logits=true", "--set", "aux_weight=[0.3,0.1]", "--out", str(tmp_path / "ok")]) == 0
    plan = plan_of(Variant("with", "googlenet", {"aux_logits": True}), Variant("without", "googlenet"),
                   train={"limit_per_class": 5, "aux_weight": 0.5})
    check_plan(plan)
    assert {run.name: run.train.get("aux_weight") for run in plan.runs()} == {"with": 0.5, "without": None}


def test_a_failed_runs_user_error_is_reported_without_its_class_name(engine, tmp_path, monkeypatch):
    # the report read "UserError: aux_weight gives ..."; an unexpected exception keeps its kind
    def refusing(cfg=None, **kwargs):
        if cfg is not None and Path(cfg.out).name == "googlenet":
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            raise UserError("the data changed under the run; pass --strict")
        return engine(cfg, **kwargs)

    monkeypatch.setattr(train_module, "train", refusing)
    engine.fates["inception_v3"] = "raise"
    lines = []
    results = run_plan(plan_of("googlenet", "inception_v3"), tmp_path, log=lines.append)
    messages = {r["name"]: r["message"] for r in results["runs"]}
    assert messages == {"googlenet": "the data changed under the run; pass --strict",
                        "inception_v3": "RuntimeError: CUDA out of memory (fake)"}
    assert "    FAILED: the data changed under the run; pass --strict; the other runs continue" in lines
    assert "googlenet: failed - the data changed under the run; pass --strict" in (tmp_path / "report.md").read_text()


class _Planned(Exception):
    """What `run_plan` was given (raised in its place: nothing checked, trained or written)."""


@pytest.fixture
def planned(monkeypatch):
    """``planned(argv)``: the (optimizer, resolved lr) of each run of the plan a command makes."""
    import inceptionlab.lab as lab_module

    def capture(plan, *args, **kwargs):
        raise _Planned(plan)

    monkeypatch.setattr(lab_module, "run_plan", capture)

    def plan_of_command(argv):
        with pytest.raises(_Planned) as caught:
            main(argv)
        cfgs = [run.config("unused", caught.value.args[0].data).resolved() for run in caught.value.args[0].runs()]
        return [(cfg.opt, cfg.lr) for cfg in cfgs]
    return plan_of_command


def test_another_optimizer_on_the_digits_takes_its_own_lr(planned, tmp_path):
    # compare --opt sgd on the digits trained SGD at the demo's AdamW lr 0.002
    from inceptionlab.lab.demo import SMALL_TRAIN

    compare = ["compare", "--models", "googlenet", "--steps", "3"]
    cases = [(["--opt", "sgd"], ("sgd", 0.05)), (["--set", "opt=rmsprop_tf"], ("rmsprop_tf", 0.045)),
             (["--opt", "adamw"], ("adamw", 0.002)), ([], ("adamw", 0.002)),
             (["--opt", "sgd", "--lr", "0.01"], ("sgd", 0.01)), (["--set", "opt=sgd", "lr=0.2"], ("sgd", 0.2))]
    for extra, expected in cases:
        assert planned(compare + extra) == [expected], extra
    assert SMALL_TRAIN["lr"] == 0.002  # (the defaults themselves stay)
    # a run of its own optimizer takes that one's lr; a plan file's opt counts as the user's
    assert planned(["compare", "--variant", "a:googlenet", "--variant", "s:googlenet:opt=sgd", "--steps", "3"]) == \
        [("adamw", 0.002), ("sgd", 0.05)]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("steps: 3\nmodels: [googlenet]\nopt: rmsprop_tf\n")
    assert planned(["compare", "--plan", str(plan_file)]) == [("rmsprop_tf", 0.045)]
    # on a folder, as on the command line: the engine's defaults
    assert planned(compare + ["--data", str(tmp_path), "--opt", "sgd"]) == [("sgd", 0.05)]
    # the demo and the studies alike
    demo = ["demo", "--steps", "3", "--models", "googlenet", "--out", str(tmp_path / "demo")]
    assert planned(demo + ["--set", "opt=sgd"]) == [("sgd", 0.05)]
    assert planned(demo + ["--data", str(tmp_path), "--set", "opt=sgd"]) == [("sgd", 0.05)]
    assert planned(["study", "label_smoothing", "--opt", "sgd"]) == [("sgd", 0.05)] * 2
    assert planned(["study", "label_smoothing"]) == [("adamw", 0.002)] * 2


def test_a_failed_runs_line_gives_its_fix_as_the_flags_a_lab_takes():
    # a lab run's failure said "use create_model('inception_resnet_v1', embedding_dim=512, num_classes=10, ...)",
    # and --model-kwargs num_classes=10 is refused where the classes are the data's
    from inceptionlab.lab.runner import _first_line

    error = UserError("facenet.pth does not fit inception_resnet_v1: use create_model('inception_resnet_v1', "
                      "embedding_dim=512, num_classes=10, weights=...)\nsecond line")
    assert _first_line(error) == ("facenet.pth does not fit inception_resnet_v1: use --model inception_resnet_v1 "
                                  "--model-kwargs embedding_dim=512")
    assert _first_line(ValueError("create_model('x', weights=...)")) == "create_model('x', weights=...)"
