"""The lab: train several Inception structures on the same data and budget, and report the difference.

    from inceptionlab.lab import Plan, Variant, run_plan, get_study
    plan = Plan([Variant("v3", "inception_v3"), Variant("v4", "inception_v4")], budget={"steps": 300},
                model_kwargs={"stem": "low_res", "depth_multiplier": 0.25})
    results = run_plan(plan, "lab/v3_v4")        # lab/v3_v4/report.html, report.md, results.json, *.png

Modules: `plan` (what runs, checked before anything trains), `runner` (runs through the training
engine, failures recorded, resume), `measure` (parameters, multiply-adds, inference speed,
calibration), `results` (reading run directories back, targets, seeds), `studies` (the papers'
claims as prepared plans with verdicts), `plots`, `report`, `demo` (the main job's plan).
"""
from inceptionlab.lab.plan import Plan, RunSpec, Variant, check_plan, parse_variant
from inceptionlab.lab.runner import load_lab, run_plan
from inceptionlab.lab.studies import STUDIES, get_study, list_studies

__all__ = ["Plan", "Variant", "RunSpec", "check_plan", "parse_variant", "run_plan", "load_lab", "get_study",
           "list_studies", "STUDIES"]
