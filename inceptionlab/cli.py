"""One command: ``inceptionlab {demo, summary, train, eval, compare, study, benchmark, export, predict}``.

The CLI only parses and calls. Each command lives in ``inceptionlab/commands/<name>.py`` with two
functions, ``add_arguments(parser)`` and ``run(args) -> int``; only the chosen command's module
is imported, so ``inceptionlab --help`` stays fast. Errors meant for the user (``UserError``,
``ValueError``, missing files) are printed as one line, with exit status 2 and no traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import sys

# command -> (module under inceptionlab.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the main job: compare four families on the embedded default data"),
    "summary": ("summary", "blocks, output shapes, parameters and multiply-adds of a model"),
    "train": ("train", "train a model of the zoo on an image folder (or the embedded digits)"),
    "eval": ("evaluate", "evaluate a run or a weights file: top-1/5, loss, confusion matrix"),
    "compare": ("compare", "train several models on the same data and budget, then report"),
    "study": ("study", "measure one of the papers' claims on your data"),
    "benchmark": ("benchmark", "images/s, step time, GFLOP/s against the machine's peak"),
    "export": ("export", "export a model to ONNX or a torch.export program"),
    "predict": ("predict", "top-k classes for images"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line: the problem and where the options are listed, without
    the usage block above it (the command parsers are made of this class too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (options: {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="inceptionlab",
        description="The Inception family (GoogLeNet to Inception-ResNet-v2) and a lab to compare it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.command_parsers = {}  # name -> the command's own parser
    for name, (module, help_text) in COMMANDS.items():
        p = parser.command_parsers[name] = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _command_module(name).add_arguments(p)
    return parser


def _refuse_unknown(parser: argparse.ArgumentParser, command: str | None, words: list[str]) -> None:
    """argparse's "unrecognized arguments" from the command's own parser (its usage, not the
    top-level one), with the closest options for a misspelt one."""
    import difflib

    if command is None:
        parser.error(f"unrecognized arguments: {' '.join(words)}")
    command_parser = parser.command_parsers[command]
    options = [o for action in command_parser._actions for o in action.option_strings]
    first_option = next((w.split("=")[0] for w in words if w.startswith("--")), None)
    hint = ", ".join(difflib.get_close_matches(first_option, options, n=2, cutoff=0.7)) if first_option else ""
    if first_option and not hint:  # a train flag given to compare, study or demo: their --set takes it
        at = next(i for i, w in enumerate(words) if w.split("=")[0] == first_option)
        value = words[at].partition("=")[2] or (words[at + 1] if at + 1 < len(words) else "")
        typed = f"{first_option} {value}".strip() if not value.startswith("-") else first_option
        setting = _in_command_terms(typed, command_parser)
        hint = setting if setting != typed else ""
    command_parser.error(f"unrecognized arguments: {' '.join(words)}" + (f"; did you mean {hint}?" if hint else ""))


def _refuse_empty(command_parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An empty word ("") given as a value: `predict ""` walked the current folder, `--out ""` wrote
    to the default folder, `--data ""` was "inside the data folder ''"."""
    for action in command_parser._actions:
        value = getattr(args, action.dest, None)
        if value == "" or (isinstance(value, list) and "" in value):
            name = action.option_strings[0] if action.option_strings else action.metavar or action.dest
            command_parser.error(f"{name} is an empty string; give it a value")


def _refuse_repeated(command_parser: argparse.ArgumentParser, words: list[str]) -> None:
    """An option that takes one value, given twice (`--steps 3 --steps 4`, `--strict --no-strict`):
    argparse kept the last without a word, where `--set lr=1 lr=2` is refused. Options that collect
    (`--model-kwargs`, `--set`) may repeat."""
    single = {option: action for action in command_parser._actions for option in action.option_strings
              if not isinstance(action, (argparse._ExtendAction, argparse._AppendAction, argparse._HelpAction))}
    seen: dict[str, str] = {}
    for word in words:
        name = word.split("=")[0]
        action = single.get(name) if word.startswith("--") else None
        if action is None:
            continue
        if action.dest in seen:
            first = seen[action.dest]
            command_parser.error(f"{name} is given twice; keep one" if first == name else
                                 f"{first} and {name} are both given; keep one")
        seen[action.dest] = name


def _in_command_terms(message: str, command_parser: argparse.ArgumentParser) -> str:
    """A hint that names a training flag this command lacks, in the form it takes instead: the
    engine says ``--warmup-steps 500``, and compare, study and demo take ``--set warmup_steps=500``."""
    import dataclasses
    import re

    options = {o for action in command_parser._actions for o in action.option_strings}
    if "--set" not in options:
        return message
    from inceptionlab.train.config import TrainConfig

    settings = {f.name for f in dataclasses.fields(TrainConfig)}

    def in_terms(match: re.Match) -> str:
        flag, value = match.group(1), match.group(2)
        name = flag[2:].replace("-", "_")
        if flag in options or name not in settings:
            return match.group(0)
        return f"--set {name}={value or 'VALUE'}"
    # a value is a number or a word that is a value (bf16), not the next word of the sentence
    return re.sub(r"(--[a-z][a-z-]*)(?: ([0-9.][^\s;,)]*|bf16|fp16|true|false|[A-Z]+\b))?", in_terms, message)


def _classes_fix(match, args: argparse.Namespace) -> str:
    """The fix for weights of N classes, in command-line terms (the API's is reset_classifier)."""
    classes = match.group(1)
    given = next((w for w in getattr(args, "model_kwargs", None) or [] if w.startswith("num_classes=")), None)
    if given is not None:  # (it said "use them with a model name", which the user had done)
        return (f"drop --model-kwargs {given}" if classes == "1000" else
                f"pass --model-kwargs num_classes={classes} instead of {given}")
    model = "a model name (not a run folder, which has its own classes)"
    if classes == "1000":
        return f"use them with {model}: its default is 1000 classes"
    return f"use them with {model} and --model-kwargs num_classes={classes}"


def _one_line_warnings(prefix: str) -> None:
    """Our own warnings print as ``inceptionlab CMD: warning: MESSAGE``, one line, where Python
    prints the file, the line number and the line of source that warned; others as Python does."""
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    python_format = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if os.path.abspath(filename).startswith(package + os.sep):
            return f"{prefix}: warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


def _command_module(name: str):
    return importlib.import_module(f"inceptionlab.commands.{COMMANDS[name][0]}")


def _switches_last(argv: list[str]) -> list[str]:
    """Moves each ``--model-kwargs KEY=VALUE ...`` group to the end of ``argv``.

    argparse gives an option with ``nargs="+"`` every word up to the next option, so in
    ``predict --model-kwargs stem=low_res photo.jpg`` the image became a (broken) switch and
    argparse said the images were missing. A switch always holds "=", so the group ends at the
    first word without one, and the words after it stay where they are. Also returns each word
    that ended a group: a switch without its value, when argparse finds no place for it or the
    option took it (a group of no switch takes its next word).
    """
    head, groups, enders, i = [], [], set(), 0
    while i < len(argv):
        if argv[i] == "--model-kwargs":
            j = i + 1
            while j < len(argv) and "=" in argv[j] and not argv[j].startswith("-"):
                j += 1
            if j < len(argv) and not argv[j].startswith("-"):
                enders.add(argv[j])
                if j == i + 1:  # no switch before it: the option takes it (it is one, without its "=")
                    j += 1
            groups += argv[i:j]
            i = j
        else:
            head.append(argv[i])
            i += 1
    return head + groups, enders


def main(argv: list[str] | None = None) -> int:
    from inceptionlab.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        from inceptionlab.errors import closest

        hint = closest(command, COMMANDS)
        print(f"inceptionlab: error: unknown command {command!r}"
              + (f"; did you mean {hint}?" if hint else f"; choose from {', '.join(COMMANDS)}"),
              file=sys.stderr)
        return 2
    try:
        return _parse_and_run(argv, command)
    except KeyboardInterrupt:  # also while a command's module (and torch) is still loading
        print(f"inceptionlab {command or ''}: interrupted".replace(" :", ":"), file=sys.stderr)
        return 130


def _parse(parser, argv: list[str]) -> argparse.Namespace:
    """The parsed arguments; argparse's one-line error (SystemExit) for bad ones."""
    ordered, enders = _switches_last(argv)
    args, unknown = parser.parse_known_args(ordered)
    taken = getattr(args, "model_kwargs", None) or []
    valueless = next((w for w in [*unknown, *taken] if w in enders), None)
    if valueless is not None and args.command is not None:  # "--model-kwargs depth_multiplier" (argparse: unrecognized)
        parser.command_parsers[args.command].error(
            f"--model-kwargs takes KEY=VALUE, got {valueless!r}; write {valueless}=VALUE")
    if unknown:
        _refuse_unknown(parser, args.command, unknown)
    if args.command is not None:
        _refuse_repeated(parser.command_parsers[args.command], ordered)
        _refuse_empty(parser.command_parsers[args.command], args)
    return args


CLASSES_FROM_DATA = ("train", "compare", "study", "demo")  # commands whose class count is the data's


TRAINING_COMMANDS = ("train", "compare", "study", "demo", "benchmark")  # the commands that take training steps


def _check_kernel_switches() -> None:
    """The environment's kernel switches (INCEPTIONLAB_POINTWISE, INCEPTIONLAB_FUSED_NORM,
    INCEPTIONLAB_KERNEL_CACHE_MB), read before a command writes or prints anything: a bad value had
    been found at the first training step, after the run's header and folder."""
    from inceptionlab.cpus import pointwise_path
    from inceptionlab.models import fused_norm

    pointwise_path.cache_clear()  # (read now, as the run will read it)
    pointwise_path()
    fused_norm.enabled()
    fused_norm.cache_limit()


def _parse_and_run(argv: list[str], command: str | None) -> int:
    from inceptionlab.errors import UserError, command_line_message

    parser = build_parser(command)
    # under torchrun, argparse's own errors are said by each machine's first process only (every
    # process printed "argument --steps: invalid int value")
    quiet_rank = os.environ.get("LOCAL_RANK", "0") != "0"
    try:
        with contextlib.redirect_stderr(io.StringIO()) if quiet_rank else contextlib.nullcontext():
            args = _parse(parser, argv)
    except SystemExit as exc:  # argparse has printed its one-line error (or --help)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 0
    _one_line_warnings(f"inceptionlab {args.command}")
    try:
        if args.command in TRAINING_COMMANDS:
            _check_kernel_switches()
        return int(_command_module(args.command).run(args) or 0)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        # create_model(...) fixes as --model/--model-kwargs flags (without num_classes where the data sets it)
        text = command_line_message(exc, classes_from_data=args.command in CLASSES_FROM_DATA).strip()
        message = text.splitlines()[0] if text else type(exc).__name__
        message = _in_command_terms(message, parser.command_parsers[args.command])
        # the API's fix for weights of another class count is a Python call; on the command line it is a model
        message = re.sub(r"pass num_classes=(\d+) \(then reset_classifier\(n\) for n new classes\)",
                         lambda match: _classes_fix(match, args), message)
        if os.environ.get("LOCAL_RANK", "0") == "0":  # under torchrun, each machine's first process says it
            print(f"inceptionlab {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`inceptionlab predict ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # what a shell reports for a writer ended by SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
