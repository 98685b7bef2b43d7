"""Helpers for the safety tests: the click command tree, walked; and one CLI invocation run
in a forked child with a time limit and a memory limit.

The tree is walked, not listed by hand, so a command or option added later (doctor, tune,
checkpoint, --monitor …) is covered the day it is merged. The forked child is how a test
survives a command that hangs on a FIFO or reads ``/dev/zero`` until memory runs out: the
parent kills it after ``timeout`` seconds, and ``RLIMIT_AS`` turns an uncapped read into a
``MemoryError`` in the child, which is reported like any other traceback.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import click
from click.testing import CliRunner

from ds_wizard.cli import main

# option or argument names that name a file, a directory, a log or something read from
# disk (a preset or run reference can be a path)
FILE_LIKE = re.compile(r"file|path|config|hostfile|hf_args|log|data|tokenizer|preset|source|"
                       r"output|dir|resume|^name$|^names$|^run$|^runs$|^ref$", re.I)
# of those, the ones ds-wizard writes to or creates (an existing big file there is no error)
OUTPUT_LIKE = re.compile(r"output|out_dir|runs_dir|report|^to$|save|dest", re.I)
#: extra address space a child may take (what any command needs is far below this)
CHILD_MEMORY = 1536 << 20


def walk(cmd: click.Command = main, path: tuple[str, ...] = (),
         ctx: click.Context | None = None) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree, depth first, with its path of names (root: ``()``)."""
    ctx = ctx or click.Context(cmd, info_name="ds-wizard")
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, (*path, name), click.Context(sub, parent=ctx,
                                                                    info_name=name))


def names_a_file(param: click.Parameter) -> bool:
    if isinstance(param, click.Option) and (param.is_flag or param.count):
        return False
    if param.name in ("help", "version"):
        return False
    return isinstance(param.type, (click.Path, click.File)) \
        or bool(FILE_LIKE.search(param.name or ""))


def file_params() -> list[tuple[tuple[str, ...], click.Command, click.Parameter]]:
    """Every (command path, command, parameter) whose parameter names a file."""
    return [(path, cmd, p) for path, cmd in walk() for p in cmd.params if names_a_file(p)]


def argv(path: tuple[str, ...], cmd: click.Command, values: dict[str, str],
         extra: list[str], fill: str) -> list[str]:
    """A command line for ``cmd``: each argument from ``values`` (a required one not there
    gets ``fill``), each option in ``values`` as ``--opt VALUE``, then ``extra``."""
    out = list(path)
    options: list[str] = []
    for p in cmd.params:
        value = values.get(p.name or "")
        if isinstance(p, click.Argument):
            if value is None and p.required:
                value = fill
            if value is not None:
                out.append(value)
        elif value is not None:
            options += [p.opts[0], value]
    return [*options, *extra] if not path else [*out, *options, *extra]


@dataclass
class Outcome:
    finished: bool  # False: killed after the time limit (a hang)
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # an exception other than SystemExit, with its traceback
    seconds: float = 0.0

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _vm_size() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_isolated(args: list[str], *, timeout: float = 20.0, stdin: str | None = None,
                 cli: click.Command = main) -> Outcome:
    """``ds-wizard ARGS`` in-process through CliRunner, in a forked child: at most
    ``timeout`` seconds and :data:`CHILD_MEMORY` more address space than the parent."""
    start = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            limit = _vm_size() + CHILD_MEMORY
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
            result = CliRunner().invoke(cli, args, input=stdin, catch_exceptions=True)
            error = None
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                error = "".join(traceback.format_exception(*result.exc_info))  # type: ignore[misc]
            payload = {"exit_code": result.exit_code, "stdout": result.stdout,
                       "stderr": result.stderr, "error": error}
            data = json.dumps(payload).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = start + timeout
    finished = True
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            finished = False
            break
        ready, _, _ = select.select([read_end], [], [], left)
        if not ready:
            continue
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    if not finished:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    if not finished:
        return Outcome(False, seconds=seconds)
    if not chunks:
        return Outcome(True, error="the child died without a result (killed by memory?)",
                       seconds=seconds)
    data = json.loads(b"".join(chunks))
    return Outcome(True, data["exit_code"], data["stdout"], data["stderr"], data["error"],
                   seconds)
