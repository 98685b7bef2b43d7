"""``ds-wizard explain``: read a DeepSpeed batch error (a pasted line or a whole log) and say
what DeepSpeed saw, the likely causes in order, and the exact ``fix`` command.

The messages are DeepSpeed 0.19's own (``runtime/config.py`` ``_batch_assertion`` and
``_set_batch_related_parameters``) and transformers' "values that mismatch
TrainingArguments" error. Launcher lines in a log (``dist_world_size=``, ``WORLD INFO
DICT``, ``CUDA_VISIBLE_DEVICES=``, ``mpirun``) sharpen the diagnosis.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

# Every number is at most 20 digits and starts where no digit precedes it, every run of
# spaces and every word is bounded: each pattern then tries O(1) work per position, so a
# 1 MB run of digits or spaces is scanned in linear time, not quadratic.
_N = r"(?<![\d.])-?\d{1,20}(?:\.\d{1,20})?(?![\d.])"
_U = r"(?<![\d.])\d{1,20}(?:\.\d{1,20})?(?![\d.])"
_S = r"[ \t]{0,40}"
_MISMATCH = re.compile(
    rf"world_size[ \t]{{1,40}}(?P<t>{_N}){_S}!={_S}(?P<m>{_N}){_S}\*{_S}"
    rf"(?P<g>{_N}){_S}\*{_S}(?P<ws>{_U})")
# the bare "16 != 1 * 1 * 1" when only the tail of the line was pasted
_BARE = re.compile(rf"(?P<t>{_N}){_S}!={_S}(?P<m>{_N}){_S}\*{_S}(?P<g>{_N}){_S}\*{_S}"
                   rf"(?P<ws>{_U})")
_NOT_POSITIVE = re.compile(
    r"(?P<what>Train batch size|Micro batch size per gpu|Gradient accumulation steps):"
    rf"{_S}(?P<v>{_N}) has to be greater than 0")
_HF = re.compile(r"- ds (?P<key>[\w.]{1,200})=(?P<ds>\S{1,200}) vs hf "
                 r"(?P<hf_key>[\w+|]{1,200}(?: \(calculated\))?)=(?P<hf>\S{1,200})")
_WORLD_HINTS = (re.compile(r"dist_world_size=(\d{1,9})(?!\d)"),
                re.compile(rf"world_size{_S}={_S}(\d{{1,9}})(?!\d)"),
                re.compile(r"num_local_procs=(\d{1,9})(?!\d)"))
_VISIBLE = re.compile(r"CUDA_VISIBLE_DEVICES[=:][ \t]{0,40}['\"]?([\d, \t]{0,400})")
_CONFIG = re.compile(r"--deepspeed(?:_config)?[= ]{1,40}([^\s]{1,1024}?\.json)(?!\S)")
# what a log line must contain to matter to any pattern above: lines without are dropped
# while a log is read, so a log of any size is scanned in one pass with bounded memory
_RELEVANT = ("world_size", "!=", "has to be greater than 0", "- ds ", "num_local_procs",
             "CUDA_VISIBLE_DEVICES", "--deepspeed", "mpirun", "OMPI_",
             "Either train_batch_size")
_RELEVANT_RE = re.compile(b"|".join(re.escape(word.encode("ascii")) for word in _RELEVANT))
#: characters kept of one relevant line (DeepSpeed's lines are a few hundred)
MAX_LINE_CHARS = 4096


@dataclass
class Explanation:
    """What the error says, and what to do about it."""

    found: bool
    message: str = ""  # the DeepSpeed line that was recognised
    world_size: int | None = None  # as DeepSpeed saw it
    triplet: tuple[Any, Any, Any] | None = None  # train, micro, accumulation DeepSpeed used
    causes: list[str] = field(default_factory=list)  # most likely first
    fix_command: str | None = None
    intended_world_size: int | None = None
    config: str | None = None
    note: str | None = None  # why a line that looks like DeepSpeed's error is not one

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relevant_text(chunks: Iterable[bytes]) -> str:
    """The lines of a log that any pattern of :func:`explain` can match, from a stream of
    byte chunks: one pass, memory bounded by what is kept, not by the log's size."""
    kept: list[str] = []
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        kept += _keep(data[:cut])
        rest = data[cut:]
        if len(rest) > MAX_LINE_CHARS * 4:  # one endless line: keep its start only
            kept += _keep(rest)
            rest = b""
    kept += _keep(rest)
    return "\n".join(kept)


def _keep(block: bytes) -> list[str]:
    """The matching lines of ``block``: one C-speed search for the words (all ASCII), and
    only the lines found are decoded."""
    out = []
    pos = 0
    while (found := _RELEVANT_RE.search(block, pos)) is not None:
        start = block.rfind(b"\n", 0, found.start()) + 1
        end = block.find(b"\n", found.end())
        end = len(block) if end < 0 else end
        raw = block[start:min(end, start + MAX_LINE_CHARS * 4)]
        out.append(raw.decode("utf-8", errors="replace")[:MAX_LINE_CHARS])
        pos = end + 1
    return out


def _num(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def explain(text: str, config: str | None = None, num_gpus: int | None = None) -> Explanation:
    """Diagnose the DeepSpeed batch error in ``text`` (a line or a log).

    ``config``: the config file (otherwise taken from ``--deepspeed_config`` in the log);
    ``num_gpus``: the GPUs the job was meant to use, when the user knows."""
    config = config or _first(_CONFIG, text)
    visible = _first(_VISIBLE, text)
    launcher_world = next((int(m) for p in _WORLD_HINTS if (m := _first(p, text))), None)
    mpirun = "mpirun" in text or "OMPI_" in text
    hf = list(_HF.finditer(text))
    out = Explanation(False, config=config)
    if hf:
        out.found = True
        out.message = hf[0].group(0)
        for match in hf:
            if match.group("hf_key").startswith("per_device_train_batch_size"):
                out.causes.append(
                    f"HF Trainer: per_device_train_batch_size={match.group('hf')} disagrees with "
                    f"the config's train_micro_batch_size_per_gpu={match.group('ds')}")
            else:
                out.causes.append(f"HF Trainer: config {match.group('key')}={match.group('ds')} "
                                  f"but TrainingArguments give {match.group('hf')}")
        args = [f"{m.group('hf_key')}={m.group('hf')}" for m in hf
                if m.group("hf_key") in ("per_device_train_batch_size",
                                         "gradient_accumulation_steps")]
        ws = num_gpus or launcher_world
        hf_flag = ",".join(args) or "per_device_train_batch_size=N"
        out.fix_command = _command(config, ws, f"--hf {hf_flag}")
        out.causes.append('or set these keys to "auto" and let the Trainer fill them in')
        return out
    match = _MISMATCH.search(text) or _BARE.search(text)
    if match:
        t, m, g, ws = (_num(match.group(k)) for k in ("t", "m", "g", "ws"))
        if t == m * g * ws:
            # DeepSpeed asserts train == micro * accumulation * world: when the numbers
            # agree, this line is not an error DeepSpeed raised (an edited or quoted line)
            out.message = _line_of(text, match)
            out.note = (f"{t} = {m} × {g} × {ws} is true: DeepSpeed raises this only when "
                        "the numbers differ, so this line is not its error")
            return out
        if ws < 1 or not float(ws).is_integer():
            out.message = _line_of(text, match)
            out.note = (f"world size {ws} is not a number of ranks DeepSpeed can run with, "
                        "so this line is not its error")
            return out
        out.found, out.message = True, _line_of(text, match)
        out.triplet, out.world_size = (t, m, g), int(ws)
        _mismatch_causes(out, t, m, g, int(ws), num_gpus, launcher_world, visible, mpirun)
        return out
    positive = _NOT_POSITIVE.search(text)
    if positive:
        out.found, out.message = True, _line_of(text, positive)
        what, value = positive.group("what"), _num(positive.group("v"))
        ws = num_gpus or launcher_world
        if what.startswith("Micro") and value == 0:
            out.causes.append(
                "micro-batch rounded to 0: DeepSpeed derived train_micro_batch_size_per_gpu as "
                "train_batch_size // world_size // gradient_accumulation_steps, and the global "
                f"batch is smaller than {ws or 'the number of'} rank(s) × accumulation")
            out.fix_command = _command(config, ws, "--keep micro")
        else:
            out.causes.append(f"{what.lower()} is {value} in the config (or derived as "
                              f"{value}); it must be at least 1")
            out.fix_command = _command(config, ws, "")
        return out
    if "Either train_batch_size or train_micro_batch_size_per_gpu" in text:
        out.found = True
        out.message = ("Either train_batch_size or train_micro_batch_size_per_gpu needs to be "
                       "provided")
        out.causes.append("the config has neither train_batch_size nor "
                          "train_micro_batch_size_per_gpu (or both are null)")
        out.fix_command = None  # fix needs a number to start from
    return out


def _mismatch_causes(out: Explanation, t: Any, m: Any, g: Any, ws: int, num_gpus: int | None,
                     launcher_world: int | None, visible: str | None, mpirun: bool) -> None:
    per_rank = m * g if isinstance(m, int) and isinstance(g, int) else None
    expected = t // per_rank if per_rank and t % per_rank == 0 else None
    intended = num_gpus or (expected if expected and expected != ws else None)
    if launcher_world and launcher_world != ws:
        intended = num_gpus or launcher_world
    out.intended_world_size = intended
    causes = []
    if ws == 1 and ((expected or 0) > 1 or (launcher_world or 0) > 1):
        how = ("under mpirun, without the environment DeepSpeed reads the rank from (use "
               "`deepspeed --launcher openmpi` or call deepspeed.init_distributed() first)"
               if mpirun else "with `python script.py` instead of a distributed launcher "
               "(deepspeed, torchrun, accelerate launch)")
        causes.append(f"launched {how}: DeepSpeed saw world size 1, while the config expects "
                      f"{intended or expected} rank(s)")
    if visible is not None and intended and ws < intended:
        shown = visible.strip().rstrip(",") or "(empty)"
        causes.append(f"CUDA_VISIBLE_DEVICES={shown} hides GPUs: DeepSpeed saw {ws} "
                      f"rank(s), the config is written for {intended}")
    elif intended and ws not in (1,) and ws < intended:
        causes.append(f"fewer GPUs than the config was written for ({ws} seen, {intended} "
                      "expected): CUDA_VISIBLE_DEVICES or --num_gpus/--include may hide some")
    if expected is None and per_rank:
        causes.append(f"the global batch {t} does not divide into {ws} rank(s) × micro-batch "
                      f"{m} × accumulation {g}: the config was written for another GPU count")
    if ws > 1 and expected and expected != ws and not causes:
        causes.append(f"the config was written for {expected} GPU(s); DeepSpeed ran on {ws}")
    causes.append("an HF Trainer per_device_train_batch_size that differs from the config's "
                  "train_micro_batch_size_per_gpu (check with `ds-wizard check CONFIG --hf ...`)")
    out.causes = causes
    target = num_gpus or ws
    if ws == 1 and intended and intended > 1 and not num_gpus:
        # launching correctly is the fix; the config is right for the intended size
        out.fix_command = _command(out.config, intended, "") + "   # confirms it; then " \
            "launch with `deepspeed --num_gpus " + str(intended) + " ...`"
        return
    keep = "--keep micro"
    if per_rank and isinstance(t, int) and target > 0 and t % target == 0:
        keep = "--keep global"
    out.fix_command = _command(out.config, target, keep)


def _command(config: str | None, num_gpus: int | None, extra: str) -> str:
    parts = ["ds-wizard", "fix", shlex.quote(config or "ds_config.json")]
    if num_gpus:
        parts += ["--num-gpus", str(num_gpus)]
    if extra:
        parts.append(extra)
    return " ".join(parts)


def _line_of(text: str, match: re.Match[str]) -> str:
    """The whole line the match is on (what the user recognises), at most 300 characters."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    line = text[start:end if end >= 0 else len(text)].strip()
    return line if len(line) <= 300 else "…" + line[-299:]


def _first(pattern: re.Pattern[str], text: str) -> str | None:
    match = pattern.search(text)
    return match.group(1) if match else None
