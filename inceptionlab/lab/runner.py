"""Running a plan: every run through the training engine, one after another, each in its own
directory under ``LAB_DIR/runs/``, then the report.

A lab directory::

    LAB_DIR/plan.yaml           the plan (what --resume continues)
    LAB_DIR/runs/<run>/         one engine run directory per run (+ lab_measure.json)
    LAB_DIR/report.html         self-contained report (images inline)
    LAB_DIR/report.md, results.json, *.png

A run that fails (diverges, runs out of memory, raises) is recorded with its reason and the
others still run. An interrupted compare continues with ``run_plan(load_lab(d), d, resume=True)``:
finished and diverged runs are kept, an interrupted run resumes from its latest checkpoint, and
failed runs and runs that never started start (again). A plan whose budget was raised (``compare
--resume LAB --steps N``) extends its finished and interrupted runs from their checkpoints.
"""
from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path
from typing import Callable

from inceptionlab.errors import UserError, command_line_message, listed
from inceptionlab.files import why_not_writable
from inceptionlab.lab.plan import BUDGET_KEYS, Plan, PlanCheck, RunSpec, check_plan
from inceptionlab.lab.results import CALIBRATION_FILE, DONE_STATUSES, FAILURE_FILE

PLAN_FILE = "plan.yaml"
REPORT_FILES = ("results.json", "report.html", "report.md")
# what the lab measured of a run's trained weights: a run that trains again is measured again (an extended
# run's report gave the calibration of its shorter model). lab_measure.json stays: it measures a fresh model
# of the run's architecture and input size, which training does not change.
TRAINED_WEIGHTS_MEASUREMENTS = (CALIBRATION_FILE,)


def load_lab(lab_dir) -> Plan:
    """The plan of an existing lab directory (for --resume)."""
    path = Path(lab_dir) / PLAN_FILE
    if not path.is_file():
        raise UserError(f"{lab_dir} is not a lab folder (no {PLAN_FILE}); pass the --out folder of an "
                        f"earlier demo, compare or study")
    return Plan.from_yaml(path)


def prepare_lab(plan: Plan, lab_dir, *, resume: bool = False, overwrite: bool = False,
                resume_hint: str | None = None) -> PlanCheck:
    """Checks the plan (UserError before anything runs) and readies ``lab_dir``. On ``resume``, a ``plan.data``
    other than the saved plan's is where the lab's data folder moved: it must hold the classes the runs trained on."""
    from inceptionlab.lab.plots import PLOT_FILES

    lab_dir = Path(lab_dir)
    moved = resume and _data_moved(plan, lab_dir, resume_hint or f"inceptionlab compare --resume {lab_dir}")
    check = check_plan(plan)
    if plan.data is not None:  # (each run failed with train's refusal, after the lab's files went into the data)
        data, out = Path(str(plan.data)).expanduser().resolve(), lab_dir.expanduser().resolve()
        if out == data or data in out.parents:
            raise UserError(f"the output folder {lab_dir} is inside the data folder {plan.data}; pass an --out "
                            f"outside it")
    if resume:
        if moved:
            _check_trained_classes(plan, lab_dir, check.classes)
        _check_extensions(plan, lab_dir)
        if plan.to_dict() != load_lab(lab_dir).to_dict():  # a new budget or data folder: later resumes continue with it
            try:
                plan.write_yaml(lab_dir / PLAN_FILE)
            except OSError as exc:
                raise UserError(f"cannot write to {lab_dir}: {why_not_writable(lab_dir, exc)}") from None
        return check
    is_lab = (lab_dir / PLAN_FILE).is_file()
    if not is_lab:  # someone's folder: --overwrite must not delete what a lab did not write
        if (lab_dir / "config.yaml").is_file() and (lab_dir / "metrics.csv").is_file():  # (a lab was written into it)
            raise UserError(f"{lab_dir} holds a training run (its config.yaml and metrics.csv), not a lab; pass "
                            f"another --out")
        theirs = [name for name in ("runs", *REPORT_FILES, *PLOT_FILES) if (lab_dir / name).exists()]
        if theirs:
            raise UserError(f"{lab_dir} holds {', '.join(theirs)} but no {PLAN_FILE}, so it is not a lab folder "
                            f"and a lab would replace them; pass another --out")
    elif not overwrite:
        resume_hint = resume_hint or f"inceptionlab compare --resume {lab_dir}"
        what = "runs"
        try:
            held = Plan.from_yaml(lab_dir / PLAN_FILE).study
        except UserError:
            held = plan.study
        if held != plan.study:  # the hint was this command's resume, which refuses the other kind of lab
            what = f"the {held} study" if held else "a compare"
            resume_hint = (f"inceptionlab study {held} --resume --out {lab_dir}" if held
                           else f"inceptionlab compare --resume {lab_dir}")
        raise UserError(f"{lab_dir} already holds {what}; continue {'them' if what == 'runs' else 'it'} with "
                        f"{resume_hint}, start over with --overwrite, or pass another --out")
    else:  # the lab's own files only: other files in the folder, and in its runs/, stay
        for name in _lab_run_names(lab_dir, plan):
            shutil.rmtree(lab_dir / "runs" / name, ignore_errors=True)
        for name in (*REPORT_FILES, *PLOT_FILES):
            (lab_dir / name).unlink(missing_ok=True)
    if plan.data is not None:  # absolute, so that --resume works from any folder
        plan.data = str(Path(plan.data).expanduser().resolve())
    for train in (plan.train, *(variant.train for variant in plan.variants)):  # the initial weights too (a
        if isinstance(train.get("weights"), str):                          # relative one failed --resume elsewhere)
            train["weights"] = str(Path(train["weights"]).expanduser().resolve())
    try:
        lab_dir.mkdir(parents=True, exist_ok=True)
        plan.write_yaml(lab_dir / PLAN_FILE)
    except OSError as exc:
        raise UserError(f"cannot write to {lab_dir}: {why_not_writable(lab_dir, exc)}; pass a writable --out") from None
    return check


def _data_moved(plan: Plan, lab_dir: Path, resume_hint: str) -> bool:
    """Whether a resumed ``plan`` names another data folder than the saved plan (--resume --data, where the lab's
    data moved; made absolute in ``plan``). UserError for a saved folder that is gone, naming that fix, as train
    --resume does (it said "does not exist; ... or leave --data out", and --data was refused)."""
    saved = load_lab(lab_dir).data
    if plan.data is None or plan.data == saved:
        if plan.data is not None and not Path(plan.data).exists():
            raise UserError(f"the lab's data folder {plan.data} is gone; put it back there, or pass the folder's new "
                            f"place: {resume_hint} --data NEW_PATH")
        return False
    data = Path(str(plan.data)).expanduser().resolve()
    if not data.is_dir():
        raise UserError(f"--data {plan.data} is not a folder; pass the folder the lab's data moved to")
    plan.data = str(data)
    return plan.data != saved


def _check_trained_classes(plan: Plan, lab_dir: Path, classes: list[str]) -> None:
    """The classes of a lab's new data folder must be those its runs trained on (as their summaries recorded)."""
    trained = next((found for run in plan.runs() if (found := _summary(lab_dir / "runs" / run.name).get("classes"))),
                   None)
    if trained is not None and list(trained) != list(classes):
        raise UserError(f"--data {plan.data} holds other classes ({listed(classes)}) than the lab's runs trained on "
                        f"({listed(trained)}); pass the folder the lab's data moved to, or start a new lab on this "
                        f"data with another --out")


def _lab_run_names(lab_dir: Path, plan: Plan) -> list[str]:
    """The run folders a lab in ``lab_dir`` wrote (its saved plan's runs) or is about to write."""
    try:
        held = [run.name for run in Plan.from_yaml(lab_dir / PLAN_FILE).runs()]
    except UserError:  # an unreadable plan: its runs cannot be told from a user's folders, so they stay
        held = []
    return list(dict.fromkeys(held + [run.name for run in plan.runs()]))


def run_budget(run: RunSpec) -> dict:
    """The run's budget as the plan gives it (the shared one, or the run's own)."""
    return {key: run.train[key] for key in BUDGET_KEYS if run.train.get(key) is not None}


def _saved_budget(run_dir: Path) -> dict | None:
    """The budget the run was last trained under (its config.yaml), or None where that is not recorded."""
    from inceptionlab.train.config import read_yaml

    try:
        saved = read_yaml(run_dir / "config.yaml")
    except (UserError, OSError):
        return None
    if not isinstance(saved, dict) or not any(key in saved for key in BUDGET_KEYS):
        return None
    return {key: saved[key] for key in BUDGET_KEYS if saved.get(key) is not None}


def _to_extend(run: RunSpec, run_dir: Path) -> dict | None:
    """The run's new budget where the plan's differs from the one it trained under and it finished or
    was interrupted (a diverged run is a result; a failed one starts again under the plan's)."""
    saved = _saved_budget(run_dir)
    if (saved is None or saved == run_budget(run) or run_state(run_dir) not in ("done", "partial")
            or _summary(run_dir).get("status") == "diverged"):
        return None
    return run_budget(run)


def _check_extensions(plan: Plan, lab_dir: Path) -> None:
    """A new budget must lie beyond what every run it extends has done (UserError before anything runs)."""
    for run in plan.runs():
        run_dir = lab_dir / "runs" / run.name
        budget = _to_extend(run, run_dir)
        summary = _summary(run_dir)
        if budget is None or summary.get("steps") is None:  # (killed before its summary: the engine checks)
            continue
        done = {"steps": summary.get("steps"), "epochs": summary.get("epochs"),
                "minutes": (summary.get("seconds") or 0) / 60}
        if any(done[key] is not None and done[key] >= value for key, value in budget.items()):
            raise UserError(f"run {run.name} is already at step {done['steps']} (epoch {done['epochs']:g}, "
                            f"{done['minutes']:.2f} minutes), which {_budget_text(budget)} does not extend; pass a "
                            f"budget beyond that")


def _budget_text(budget: dict) -> str:
    return ", ".join(f"{key} {value:g}" for key, value in budget.items())


def run_state(run_dir: Path) -> str:
    """"done" (finished or diverged: a result), "failed" (raised: started again on resume), "partial"
    (has a checkpoint to resume) or "new"."""
    from inceptionlab.train.checkpoint import CheckpointDir

    run_dir = Path(run_dir)
    if (run_dir / FAILURE_FILE).exists():
        return "failed"
    status = _summary(run_dir).get("status")
    if status in DONE_STATUSES:
        return "failed" if status == "failed" else "done"
    if (run_dir / "checkpoints").is_dir() and CheckpointDir(run_dir / "checkpoints").latest() is not None:
        return "partial"
    return "new"


def run_plan(plan: Plan, lab_dir, *, resume: bool = False, overwrite: bool = False,
             log: Callable[[str], None] = print, quiet_runs: bool = False, calibrate: bool | None = None,
             resume_hint: str | None = None) -> dict:
    """Runs every run of ``plan`` into ``lab_dir``, then writes the report; returns the results.

    Raises UserError (before anything trains) for a bad plan, and KeyboardInterrupt when a run
    was interrupted (the lab directory can then be resumed). ``calibrate`` measures each finished
    run's calibration on its validation split (default: when the study asks for it)."""
    from inceptionlab.lab.report import make_report
    from inceptionlab.lab.studies import get_study

    lab_dir = Path(lab_dir)
    check = prepare_lab(plan, lab_dir, resume=resume, overwrite=overwrite, resume_hint=resume_hint)
    study = get_study(plan.study) if plan.study else None
    if study:  # (after the checks: a refused study said its claim first)
        log(f"claim ({study.paper}): {study.claim}")
    if calibrate is None:
        calibrate = bool(study and study.calibrate)
    runs = plan.runs()
    budget = ", ".join(f"{k} {v:g}" for k, v in plan.budget.items()) or "per-run budgets"
    log(f"{plan.title}: {len(runs)} run(s), {budget} each, on {check.source}; {len(check.classes)} classes; "
        f"lab folder {lab_dir}")
    continue_with = resume_hint or f"inceptionlab compare --resume {lab_dir}"
    terminated = _SigtermInterrupts()  # SIGTERM between runs' steps (a run's set-up) ended the lab without a word
    try:
        for i, run in enumerate(runs, 1):
            run_dir = lab_dir / "runs" / run.name
            state = run_state(run_dir)
            head = f"[{i}/{len(runs)}] {run.name}: {describe_run(run)}"
            extend = _to_extend(run, run_dir) if resume else None
            if state == "done" and extend is None:
                log(f"{head} - kept from before ({_status_text(run_dir)})")
            else:
                log(f"{head}" + {"partial": " - resuming from its checkpoint", "new": "", "done": "",
                                 "failed": f" - failed before ({_failure_message(run_dir)}); starting it again"}[state]
                    + (f" - extending its budget: {_budget_text(_saved_budget(run_dir))} -> {_budget_text(extend)}"
                       if extend else ""))
                _train_one(run, run_dir, plan, resume=state in ("partial", "done"), budget=extend, log=log,
                           quiet=quiet_runs, continue_with=continue_with)
            _measure_one(run, run_dir, check)
            if calibrate:
                _calibrate_one(run_dir, log, plan.data)
    except KeyboardInterrupt:
        log(f"interrupted: the runs so far are kept in {lab_dir}; continue with: {continue_with}")
        raise
    finally:
        terminated.restore()
    return make_report(plan, lab_dir, data_source=check.source, val_images=check.val_images,
                       classes=len(check.classes))


def describe_run(run: RunSpec) -> str:
    """``inception_v3 (norm=False, stem=low_res)``: the model and its switches, and the shared fine-tuning
    settings it leaves out (``; from scratch, without the shared freeze_bn, body_lr_scale``)."""
    switches = ", ".join(f"{k}={v}" for k, v in run.model_kwargs.items())
    left_out = f"; from scratch, without the shared {', '.join(run.left_out)}" if run.left_out else ""
    return run.model + (f" ({switches})" if switches else "") + left_out


class _SigtermInterrupts:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, until `restore` (in the main thread only).
    A run's training steps handle both signals themselves (a checkpoint, then the lab's message)."""

    def __init__(self) -> None:
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._interrupt)

    @staticmethod
    def _interrupt(signum, frame) -> None:
        raise KeyboardInterrupt("SIGTERM")

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _train_one(run: RunSpec, run_dir: Path, plan: Plan, *, resume: bool, log, quiet: bool,
               continue_with: str | None = None, budget: dict | None = None) -> None:
    """Trains (or resumes, under ``budget`` when it is a new one) one run; a failure is recorded, not raised."""
    from inceptionlab.train import train

    if not resume and run_dir.exists():  # an attempt that failed, or died before its first checkpoint
        shutil.rmtree(run_dir)
    for name in TRAINED_WEIGHTS_MEASUREMENTS:  # (before training: an interrupted extension keeps none either)
        (run_dir / name).unlink(missing_ok=True)
    new_budget = {"budget": budget} if budget else {}
    try:  # a run stopped by a signal names the lab's command to continue (its own had left the rest undone)
        summary = (train(resume=run_dir, continue_with=continue_with, data=plan.data, **new_budget) if resume
                   else train(run.config(run_dir, plan.data, quiet=quiet), continue_with=continue_with))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a failed run must not stop the others (OOM, a bug, bad data)
        # a UserError says what is wrong in words (the class name led the report's line); others name their kind
        message = _first_line(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {_first_line(exc)}"
        _record_failure(run_dir, message)
        log(f"    FAILED: {message}; the other runs continue")
        return
    status = summary.get("status")
    if status == "interrupted" or summary.get("stop_signal"):  # (a Ctrl-C in a final evaluation was lost)
        raise KeyboardInterrupt(summary.get("message") or "interrupted")
    if status != "finished":
        log(f"    {str(status).upper()}: {summary.get('message') or 'no message'}; the other runs continue")


def _record_failure(run_dir: Path, message: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = run_dir / "summary.json"
    if summary.exists():  # the engine already wrote the reason
        try:
            if json.loads(summary.read_text()).get("status") == "failed":
                return
        except json.JSONDecodeError:
            pass
    (run_dir / FAILURE_FILE).write_text(json.dumps(dict(status="failed", message=message)) + "\n")


def _measure_one(run: RunSpec, run_dir: Path, check: PlanCheck) -> None:
    from inceptionlab.lab.measure import measure_run

    summary = _summary(run_dir)
    img_size = summary.get("img_size") or run.train.get("img_size")
    if not img_size:
        return  # failed before the engine chose a size; nothing to measure at
    measure_run(run_dir, run.model, run.model_kwargs, num_classes=len(check.classes), img_size=int(img_size),
                batch_size=int(summary.get("batch_size") or run.train.get("batch_size") or 32),
                threads=run.train.get("threads"))


def _calibrate_one(run_dir: Path, log, data: str | None) -> None:
    """Measures a finished run's calibration on its validation split, in ``data`` (the lab's: a run kept from
    before a --resume --data still names the folder it trained on)."""
    from inceptionlab.lab.measure import calibration, predict_val

    path = run_dir / CALIBRATION_FILE
    if path.exists() or _summary(run_dir).get("status") != "finished":
        return
    try:
        table = calibration(*predict_val(run_dir, data))
    except Exception as exc:
        log(f"    calibration of {run_dir.name} failed: {type(exc).__name__}: {_first_line(exc)}")
        return
    path.write_text(json.dumps(table, indent=1))


def _summary(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _failure_message(run_dir: Path) -> str:
    """Why a failed run failed: the lab's record of what the engine raised, or the engine's summary."""
    try:
        message = json.loads((run_dir / FAILURE_FILE).read_text()).get("message")
    except (OSError, json.JSONDecodeError, AttributeError):
        message = None
    return message or _summary(run_dir).get("message") or "no message"


def _status_text(run_dir: Path) -> str:
    if (run_dir / FAILURE_FILE).exists():
        return "failed"
    summary = _summary(run_dir)
    best = summary.get("best_top1")
    return f"{summary.get('status')}" + (f", best top-1 {best:.2f}%" if best is not None else "")


def _first_line(exc: BaseException) -> str:
    """The error's first line; a UserError's create_model fix as the flags a lab takes (its runs' classes are
    the data's: a fix's num_classes left out)."""
    text = (command_line_message(exc, classes_from_data=True) if isinstance(exc, UserError) else str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__
