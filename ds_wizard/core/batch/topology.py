"""Where the ranks run: nodes, ranks per node, and the data-parallel world size.

:func:`resolve_topology` is the one function that turns what the user said (``--num-gpus``,
``--num-nodes``, ``--gpus-per-node``, ``--hostfile``, the model-parallel degrees, or the
GPUs detected here) into a :class:`Topology`. Every place that does batch maths (check,
fix, ``--auto``, generate, plan, launch and the wizard) takes its world size from it.

A hostfile is DeepSpeed's: one ``host slots=N`` line per node, ``#`` comments and blank
lines ignored. :func:`parse_hostfile` accepts what ``deepspeed.launcher.runner.fetch_hostfile``
accepts, but says which line is wrong, and also refuses the few lines DeepSpeed takes by
accident (``slots=0``, ``slots=4x``, text after the slot count).

ds-wizard's ``--num-gpus`` is always the total number of ranks over all nodes; DeepSpeed's
own ``--num_gpus`` is per node. A launch never passes either to DeepSpeed: it writes the
hosts and slots chosen into the run's own hostfile (``launch.command.write_hostfile``).
"""

from __future__ import annotations

import contextlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from ds_wizard.core.base.errors import DsWizardError
from ds_wizard.core.base.fsio import read_text
from ds_wizard.core.base.limits import MAX_WORLD_SIZE, LimitError, parse_int
from ds_wizard.core.batch.batchmath import data_parallel_size

# DeepSpeed's pattern is r'^(\S+)\s+slots=(\d+)' searched at the start of the line; this is
# the same line, anchored at both ends
_HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)$")
_DS_HOST_LINE = re.compile(r"^(\S+)\s+slots=(\d+)")
# what a host name (or an IPv4/IPv6 address, or user@host) is made of: nothing a shell, pdsh
# or ssh would read as syntax, since the name is written into scripts and command lines
_HOST_NAME = re.compile(r"[A-Za-z0-9._:@\[\]-]{1,253}", re.ASCII)
#: bytes of a hostfile: a line per node, far below a megabyte for any real cluster
MAX_HOSTFILE_BYTES = 1 << 20
LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class TopologyError(DsWizardError):
    """Nodes, GPUs or a hostfile that do not make a job."""


class HostfileError(TopologyError):
    """A hostfile that is missing, unreadable, or has a bad line."""


@dataclass(frozen=True)
class Host:
    name: str
    slots: int


def parse_hostfile(text: str, source: str = "hostfile") -> tuple[Host, ...]:
    """``host slots=N`` lines → hosts in file order; a bad line is a one-line error."""
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        match = _HOST_LINE.match(line)
        if match is None:
            if _DS_HOST_LINE.match(line):
                raise HostfileError(f"{where}: {line!r} has text after the slot count",
                                    "write one `host slots=N` per line, nothing after N")
            raise HostfileError(f"{where}: {line!r} is not `host slots=N`",
                                "write one `host slots=N` per line, e.g. `worker-1 slots=8`")
        name = match.group(1)
        if not _HOST_NAME.fullmatch(name):
            raise HostfileError(f"{where}: {name!r} is not a host name",
                                "a host name is letters, digits and . - _ : @ [ ] only")
        try:
            slots = parse_int(match.group(2), f"{where}: slots", low=0, high=MAX_WORLD_SIZE)
        except LimitError as exc:
            raise HostfileError(exc.message, exc.hint) from None
        if name in seen:
            raise HostfileError(f"{where}: host {name} is listed twice (first on line "
                                f"{seen[name]})", "list each host once")
        if slots < 1:
            raise HostfileError(f"{where}: host {name} has slots={slots}",
                                "give each host at least one slot (its GPU count)")
        seen[name] = number
        hosts.append(Host(name, slots))
    if not hosts:
        raise HostfileError(f"{source} lists no host",
                            "write one `host slots=N` line per node, e.g. `worker-1 slots=8`")
    return tuple(hosts)


def read_hostfile(path: str | Path) -> tuple[Host, ...]:
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise HostfileError(f"hostfile {p} does not exist",
                            "pass the path of a file of `host slots=N` lines")
    text = read_text(p, limit=MAX_HOSTFILE_BYTES, what="hostfile (`host slots=N` lines)",
                     error=HostfileError)
    return parse_hostfile(text, str(p))


@dataclass(frozen=True)
class Topology:
    """Ranks per node (one entry per node) and the model-parallel degrees."""

    ranks_per_node: tuple[int, ...]
    source: str  # one line for the user: "--num-gpus 4", "hostfile hosts (2 nodes)", …
    hosts: tuple[Host, ...] = ()  # the hosts used, when a hostfile names them
    hostfile: str | None = None
    listed: int = 0  # hosts in the hostfile (DeepSpeed's --num_nodes takes the first ones)
    tp: int = 1
    pp: int = 1
    sp: int = 1

    @property
    def nodes(self) -> int:
        return len(self.ranks_per_node)

    @property
    def total_ranks(self) -> int:
        return sum(self.ranks_per_node)

    @property
    def gpus_per_node(self) -> int:
        """The smallest node's ranks (what the per-node memory figures assume)."""
        return min(self.ranks_per_node)

    @property
    def uniform(self) -> bool:
        return len(set(self.ranks_per_node)) == 1

    @property
    def data_parallel(self) -> int:
        return data_parallel_size(self.total_ranks, self.tp, self.pp, self.sp)

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    def layout(self) -> str:
        """``2 nodes × 4 GPUs = 8 ranks`` (or the per-host counts when they differ)."""
        if self.nodes == 1:
            return f"{self.total_ranks} rank(s) on 1 node"
        per = f"{self.gpus_per_node}" if self.uniform else "+".join(map(str, self.ranks_per_node))
        return f"{self.nodes} nodes × {per} GPUs = {self.total_ranks} ranks"

    def describe(self) -> str:
        if self.data_parallel == self.total_ranks:
            head = f"world size {self.data_parallel}"
        else:
            head = (f"data-parallel size {self.data_parallel} = {self.total_ranks} ranks / "
                    f"model-parallel degrees")
        where = f"{self.layout()}, " if self.nodes > 1 else ""
        return f"{head} ({where}{self.source})"

    def flags(self) -> str:
        """ds-wizard flags that give this topology again (for suggested commands)."""
        if self.hostfile:
            out = f"--hostfile {self.hostfile}"
            if self.listed > self.nodes:
                out += f" --num-nodes {self.nodes}"
            if self.hosts and any(h.slots != n for h, n in zip(self.hosts, self.ranks_per_node,
                                                                strict=False)):
                out += f" --gpus-per-node {self.gpus_per_node}"
        elif self.nodes > 1:
            out = f"--num-nodes {self.nodes} --gpus-per-node {self.gpus_per_node}"
        else:
            out = f"--num-gpus {self.total_ranks}"
        return out + "".join(f" --{name} {v}" for name, v in
                             (("tp", self.tp), ("pp", self.pp), ("sp", self.sp)) if v != 1)


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise TopologyError(f"{name} must be 1 or more, got {value}")


def resolve_topology(
    *, num_gpus: int | None = None, num_nodes: int | None = None,
    gpus_per_node: int | None = None, hostfile: str | Path | None = None,
    tp: int = 1, pp: int = 1, sp: int = 1, detected: int | None = None,
    default_ranks: int | None = None, default_note: str = "",
) -> Topology:
    """What the user said → nodes × ranks per node, checked against the parallel degrees.

    ``num_gpus`` is the total over all nodes. Without any count, ``detected`` (GPUs seen
    here, taken as the GPUs of each node) is used, else ``default_ranks`` with
    ``default_note`` as the reason; with neither, a one-line error asks for ``--num-gpus``.
    """
    for name, value in (("--num-gpus", num_gpus), ("--num-nodes", num_nodes),
                        ("--gpus-per-node", gpus_per_node)):
        _positive(name, value)
    hosts: tuple[Host, ...] = ()
    if hostfile is not None:
        hosts = read_hostfile(hostfile)
        listed = len(hosts)
        label = f"hostfile {hostfile}"
        if num_nodes is not None:
            if num_nodes > len(hosts):
                raise TopologyError(f"--num-nodes {num_nodes} but {hostfile} lists "
                                    f"{len(hosts)} host(s)",
                                    f"use --num-nodes {len(hosts)} or fewer, or add hosts")
            hosts = hosts[:num_nodes]
        if gpus_per_node is not None:
            short = [h for h in hosts if h.slots < gpus_per_node]
            if short:
                raise TopologyError(f"--gpus-per-node {gpus_per_node} but {short[0].name} has "
                                    f"slots={short[0].slots} in {hostfile}",
                                    "lower --gpus-per-node or fix the hostfile")
            per = (gpus_per_node,) * len(hosts)
        else:
            per = tuple(h.slots for h in hosts)
        if num_gpus is not None and num_gpus != sum(per):
            raise TopologyError(f"--num-gpus {num_gpus} but {hostfile} gives {sum(per)} ranks "
                                f"({len(per)} node(s))",
                                "drop --num-gpus (the hostfile decides) or make them agree")
        topo = Topology(per, label, hosts, str(hostfile), listed, tp, pp, sp)
    else:
        nodes = num_nodes or 1
        if gpus_per_node is not None:
            if num_gpus is not None and num_gpus != nodes * gpus_per_node:
                raise TopologyError(f"--num-gpus {num_gpus} is not {nodes} node(s) × "
                                    f"--gpus-per-node {gpus_per_node}",
                                    "give --num-gpus (the total) or --gpus-per-node, not both")
            per_node = gpus_per_node
            label = (f"--num-nodes {nodes} " if num_nodes else "") + \
                f"--gpus-per-node {gpus_per_node}"
        elif num_gpus is not None:
            if num_gpus % nodes:
                raise TopologyError(f"--num-gpus {num_gpus} does not split evenly over "
                                    f"{nodes} nodes",
                                    "--num-gpus is the total over all nodes: use a multiple "
                                    "of --num-nodes, or give --gpus-per-node")
            per_node, label = num_gpus // nodes, f"--num-gpus {num_gpus}"
        elif detected:
            per_node = detected
            label = (f"{detected} GPU(s) detected" if nodes == 1 else
                     f"{detected} GPU(s) detected here, on each of {nodes} nodes")
        elif default_ranks:
            per_node, label = default_ranks, default_note or f"{default_ranks} assumed"
        else:
            raise TopologyError("no GPU count: none detected here",
                                "pass --num-gpus N (the total) or --gpus-per-node G")
        topo = Topology((per_node,) * nodes, label, tp=tp, pp=pp, sp=sp)
    try:
        topo.data_parallel  # noqa: B018 - validates the degrees against the ranks
    except ValueError as exc:
        raise TopologyError(str(exc)) from None
    return topo


def local_names() -> set[str]:
    """Names this machine answers to (for "is this the head node?")."""
    names = set(LOCAL_NAMES)
    host = socket.gethostname()
    names |= {host, host.split(".")[0]}
    with contextlib.suppress(OSError):  # no resolver: the short names above still count
        names.add(socket.getfqdn())
    return names


def is_head_node(topo: Topology, names: set[str] | None = None) -> bool:
    """True when this machine is the hostfile's first host (DeepSpeed's master)."""
    if not topo.hosts:
        return not topo.multi_node
    first = topo.hosts[0].name
    names = local_names() if names is None else names
    return first in names or first.split(".")[0] in names
