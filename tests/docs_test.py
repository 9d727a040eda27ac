#!/usr/bin/python3
"""The commands the documentation shows, against the programs' own --help.

README.md and docs/*.md: in every fenced code block and every inline code span, each
`alexnet COMMAND` (also as build/app/alexnet, in a docker run line, after torchrun) must be
a command that `alexnet --help` lists, and each --flag shown after it must appear in
`alexnet COMMAND --help`. A shown top-level flag (`alexnet --version`) must exit 0.
Each scripts/NAME.py or scripts/NAME.sh shown must exist, and where the script answers
--help, each --flag shown after it must appear there; scripts/run.sh and the train half of
scripts/launch.sh pass their flags to `alexnet train`, so those are checked against its help.
Also: docs/distributed.md keeps the torchrun line that tests/multihost_test.py runs.
Exact string matching, no tolerance. Exit status 0 when all agree, 1 naming each drift.
A script whose --help fails (a module it imports is missing) is reported skipped, with the reason.
DOCS_TEST_VERBOSE=1 prints each command and its arguments as parsed.
"""
import glob
import os
import re
import subprocess
import sys

SOURCE = os.environ.get("ALEXNET_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ["ALEXNET_BINARY"]
PYTHON = "/usr/bin/python3"

# Scripts that do work when run, whatever their arguments (never run them for --help), and the
# one whose arguments are ctest's. Their flags, where shown, are checked as noted.
PASS_TO_TRAIN = {"scripts/run.sh"}
NOT_RUN = {"scripts/run.sh", "scripts/test.sh", "scripts/docker_smoke.sh", "scripts/common.sh",
           "scripts/runtime_packages.sh", "scripts/bench_anchors.py"}
# Shell scripts whose --help prints their usage and does nothing else.
SHELL_HELP = {"scripts/launch.sh", "scripts/compare_revisions.sh", "scripts/gpu_check.sh"}

FLAG = re.compile(r"(?<![\w-])--([A-Za-z0-9][\w-]*)")
# alexnet (a path to it, or a docker image alexnet[:TAG]), then the command or a top-level flag.
# A binary given as another flag's value (--binary build/app/alexnet --repeats 5) is not a command.
COMMAND = re.compile(r"(?<![\w.-])((?:[\w.~/-]*/)?alexnet(?::[\w.-]+)?)[ \t]+([a-z][a-z0-9-]*|--[\w-]+)")
SCRIPT = re.compile(r"(?<![\w/.-])(scripts/[\w-]+\.(?:py|sh))\b")
# Where a command's arguments end: a shell pipe, list or comment, or a redirect.
END = re.compile(r"\s(?:\|\||\||&&|;|#|>|<)(?:\s|$)|;\s|\)$")

failures = []
checked = {"commands": 0, "flags": 0, "scripts": 0}


def fail(where, what):
    failures.append(f"{where}: {what}")
    print(f"FAIL {where}: {what}")


def run(argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=SOURCE)
    return p.returncode, p.stdout + p.stderr


def help_flags(text):
    return set(FLAG.findall(text))


def code_lines(path):
    """(line number, text) of each command-bearing piece of code in a Markdown file: fenced
    lines joined across backslash continuations and usage continuations (a deeper-indented
    line that starts with '[--' or '--'), and inline code spans with their whitespace folded."""
    text = open(path, encoding="utf-8").read()
    lines = text.split("\n")
    out, prose = [], []
    fenced, current, current_no, indent = False, None, 0, 0
    for no, line in enumerate(lines, 1):
        if line.lstrip().startswith("```"):
            if current is not None:
                out.append((current_no, current))
                current = None
            fenced = not fenced
            prose.append("")
            continue
        if not fenced:
            prose.append(line)
            continue
        prose.append("")
        stripped = line.strip()
        deeper = len(line) - len(line.lstrip()) > indent
        if current is not None and (current.endswith("\\") or
                                    (deeper and (stripped.startswith("[--") or stripped.startswith("--")))):
            current = current.rstrip("\\") + " " + stripped
            continue
        if current is not None:
            out.append((current_no, current))
        current, current_no, indent = line, no, len(line) - len(line.lstrip())
    if current is not None:
        out.append((current_no, current))
    # Inline spans may wrap across lines of a paragraph, never across a fenced block.
    prose_text = "\n".join(prose)
    for m in re.finditer(r"`([^`\n]+(?:\n[^`\n]+)*)`", prose_text):
        out.append((prose_text.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())))
    return out


def commands_in(text):
    """The `alexnet ...` matches in text that are commands, not another flag's value."""
    # After a flag, alexnet is a program (torchrun --no_python alexnet train, docker run --rm
    # alexnet eval) unless it is a path or a flag follows: then it is the flag's value
    # (--binary build/app/alexnet --repeats 5; a log's --arch alexnet --epochs 2).
    return [m for m in COMMAND.finditer(text)
            if not (re.search(r"--[\w-]+=?$", text[:m.start()].rstrip())
                    and ("/" in m.group(1) or m.group(2).startswith("--")))
            and not re.search(r"(^|\s)#(\s|$)", text[:m.start()])]  # in a shell comment


def arguments(text, start):
    """The part of `text` from `start` that belongs to the command there."""
    rest = text[start:]
    end = END.search(rest)
    return rest[:end.start()] if end else rest


def main():
    code, usage = run([BINARY, "--help"])
    if code != 0:
        fail("alexnet --help", f"exit status {code}")
        return 1
    commands = re.findall(r"^  ([a-z]+)\s", usage.split("commands:", 1)[-1], re.M)
    if not commands:
        fail("alexnet --help", "lists no commands")
        return 1
    command_help = {}
    for c in commands:
        status, text = run([BINARY, c, "--help"])
        if status != 0:
            fail(f"alexnet {c} --help", f"exit status {status}")
        command_help[c] = help_flags(text) | {"help"}
    top_level = {}
    script_help = {}

    def script_flags(script):
        if script not in script_help:
            path = os.path.join(SOURCE, script)
            if script in NOT_RUN:
                script_help[script] = None
            elif script.endswith(".py"):
                status, text = run([PYTHON, path, "--help"])
                if status != 0:
                    print(f"skipped: {script} --help exited {status} ({text.strip().splitlines()[-1:]}): "
                          "its flags in the docs are not checked")
                    script_help[script] = None
                else:
                    script_help[script] = help_flags(text) | {"help"}
            elif script in SHELL_HELP:
                _, text = run(["bash", path, "--help"])
                script_help[script] = help_flags(text) | {"help"}
            else:
                script_help[script] = None
        return script_help[script]

    docs = [os.path.join(SOURCE, "README.md")] + sorted(glob.glob(os.path.join(SOURCE, "docs", "*.md")))
    for doc in docs:
        name = os.path.relpath(doc, SOURCE)
        for no, text in code_lines(doc):
            where = f"{name}:{no}"
            for m in commands_in(text):
                command = m.group(2)
                checked["commands"] += 1
                if command.startswith("--"):
                    if command not in top_level:
                        top_level[command] = run([BINARY, command])[0]
                    if top_level[command] != 0:
                        fail(where, f"`alexnet {command}` exits {top_level[command]}")
                    continue
                if command not in command_help:
                    fail(where, f"`alexnet {command}`: not a command of `alexnet --help` ({', '.join(commands)})")
                    continue
                if os.environ.get("DOCS_TEST_VERBOSE"):
                    print(f"{where}: alexnet {command} {arguments(text, m.end())}")
                for flag in FLAG.findall(arguments(text, m.end())):
                    checked["flags"] += 1
                    if flag not in command_help[command]:
                        fail(where, f"`alexnet {command} --{flag}`: --{flag} is not in `alexnet {command} --help`")
            for m in SCRIPT.finditer(text):
                script = m.group(1)
                checked["scripts"] += 1
                if not os.path.isfile(os.path.join(SOURCE, script)):
                    fail(where, f"{script}: no such file")
                    continue
                args = arguments(text, m.end())
                inner = commands_in(args)
                if inner:  # an alexnet command of its own follows (checked above)
                    args = args[:inner[0].start()]
                flags = FLAG.findall(args)
                if os.environ.get("DOCS_TEST_VERBOSE"):
                    print(f"{where}: {script} {args}")
                if script in PASS_TO_TRAIN:
                    allowed, whose = command_help.get("train", set()), "alexnet train --help"
                elif script == "scripts/launch.sh":
                    allowed = (script_flags(script) or set()) | command_help.get("train", set())
                    whose = f"{script} --help or alexnet train --help"
                else:
                    allowed, whose = (script_flags(script) if flags else None), f"{script} --help"
                    if allowed is None:
                        continue
                for flag in flags:
                    checked["flags"] += 1
                    if flag not in allowed:
                        fail(where, f"`{script} --{flag}`: --{flag} is not in `{whose}`")

    # tests/multihost_test.py runs this line as printed (it skips where it cannot run as root).
    distributed = open(os.path.join(SOURCE, "docs", "distributed.md"), encoding="utf-8").read()
    if not re.search(r"^torchrun (--nnodes 2 .*?) --no_python alexnet train --distributed ",
                     distributed.replace("\\\n", " "), re.M):
        fail("docs/distributed.md", "no 'torchrun --nnodes 2 ... --no_python alexnet train --distributed' line "
             "(tests/multihost_test.py runs it)")

    print(f"checked {checked['commands']} alexnet commands, {checked['scripts']} script mentions and "
          f"{checked['flags']} flags in {len(docs)} files against --help")
    if failures:
        print(f"{len(failures)} drift(s) between the docs and the programs")
        return 1
    print("ok: every command and flag shown in the docs exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
