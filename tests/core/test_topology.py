"""Hostfiles and the one world-size function, against DeepSpeed's own hostfile parser."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds_wizard.core.batch.topology import (
    Host,
    Topology,
    TopologyError,
    is_head_node,
    parse_hostfile,
    read_hostfile,
    resolve_topology,
)

VALID = {
    "one": ("worker-0 slots=8\n", {"worker-0": 8}),
    "two": ("worker-0 slots=4\nworker-1 slots=4\n", {"worker-0": 4, "worker-1": 4}),
    "comments": ("# cluster A\n\nnode1   slots=2\n  # spare\n\tnode2\tslots=6  \n",
                 {"node1": 2, "node2": 6}),
    "ips": ("10.0.0.1 slots=8\n10.0.0.2 slots=8", {"10.0.0.1": 8, "10.0.0.2": 8}),
}
INVALID = {
    "empty": "",
    "only comments": "# nothing\n\n",
    "no slots": "worker-0\n",
    "colon": "worker-0:8\n",
    "slots word": "worker-0 slot=8\n",
    "negative": "worker-0 slots=-1\n",
    "twice": "a slots=1\nb slots=2\na slots=3\n",
    "no host": "slots=4\n",
}
# lines DeepSpeed's regex takes by accident (it is searched, not matched to the end);
# ds-wizard refuses them, since each is a typo that launches something unexpected
STRICTER = {
    "zero slots": "worker-0 slots=0\n",
    "junk after count": "worker-0 slots=4x\n",
    "text after count": "worker-0 slots=4 gpus=8\n",
}


def deepspeed_parse(text: str) -> dict[str, int] | None:
    import tempfile

    from deepspeed.launcher.runner import fetch_hostfile
    with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as f:
        f.write(text)
    try:
        return dict(fetch_hostfile(f.name))
    except ValueError:
        return None
    finally:
        Path(f.name).unlink()


def ours(text: str) -> dict[str, int] | None:
    try:
        return {h.name: h.slots for h in parse_hostfile(text)}
    except TopologyError:
        return None


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_hostfiles_match_deepspeed(name: str) -> None:
    text, expected = VALID[name]
    assert deepspeed_parse(text) == expected
    assert ours(text) == expected
    # the order is DeepSpeed's too: the first host is the master
    assert list(ours(text) or {}) == list(expected)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_hostfiles_refused_by_both(name: str) -> None:
    assert deepspeed_parse(INVALID[name]) is None
    with pytest.raises(TopologyError) as info:
        parse_hostfile(INVALID[name], "hosts")
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize("name", sorted(STRICTER))
def test_stricter_than_deepspeed_where_it_accepts_a_typo(name: str) -> None:
    assert deepspeed_parse(STRICTER[name]) is not None
    assert ours(STRICTER[name]) is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["a slots=1", "b slots=2", "c slots=12", "# x", "",
                                 "  d   slots=3 ", "e slots=", "f", "a slots=5",
                                 "g slots=0", "h slots=2 x", "slots=1"]), max_size=6))
def test_never_accepts_what_deepspeed_refuses(lines: list[str]) -> None:
    text = "\n".join(lines)
    theirs, mine = deepspeed_parse(text), ours(text)
    if mine is not None:
        assert theirs == mine
    if theirs is None:
        assert mine is None


def test_bad_line_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("# nodes\nworker-0 slots=8\nworker-1 8\n")
    with pytest.raises(TopologyError) as info:
        read_hostfile(path)
    line = info.value.one_line()
    assert f"{path} line 3" in line and "'worker-1 8'" in line and "host slots=N" in line
    with pytest.raises(TopologyError, match="does not exist"):
        read_hostfile(tmp_path / "missing")


def hostfile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "hosts"
    path.write_text(text)
    return str(path)


def test_world_size_from_hostfile(tmp_path: Path) -> None:
    hf = hostfile(tmp_path, "n0 slots=4\nn1 slots=4\nn2 slots=4\n")
    topo = resolve_topology(hostfile=hf)
    assert (topo.nodes, topo.total_ranks, topo.data_parallel) == (3, 12, 12)
    # like DeepSpeed's --num_nodes (the first hosts) and --num_gpus (per node)
    topo = resolve_topology(hostfile=hf, num_nodes=2, gpus_per_node=2, tp=2)
    assert (topo.nodes, topo.total_ranks, topo.data_parallel) == (2, 4, 2)
    assert topo.flags() == f"--hostfile {hf} --num-nodes 2 --gpus-per-node 2 --tp 2"
    assert resolve_topology(hostfile=hf).flags() == f"--hostfile {hf}"
    with pytest.raises(TopologyError, match="lists 3 host"):
        resolve_topology(hostfile=hf, num_nodes=4)
    with pytest.raises(TopologyError, match="gives 12 ranks"):
        resolve_topology(hostfile=hf, num_gpus=8)
    with pytest.raises(TopologyError, match="slots=4"):
        resolve_topology(hostfile=hf, gpus_per_node=8)
    with pytest.raises(TopologyError, match="do not divide"):
        resolve_topology(hostfile=hf, tp=5)


def test_world_size_from_counts() -> None:
    assert resolve_topology(num_gpus=8).ranks_per_node == (8,)
    assert resolve_topology(num_gpus=8, num_nodes=2).ranks_per_node == (4, 4)
    assert resolve_topology(num_nodes=2, gpus_per_node=8, pp=2).data_parallel == 8
    assert resolve_topology(num_nodes=3, detected=2).total_ranks == 6
    assert resolve_topology(default_ranks=2, default_note="cpu").source == "cpu"
    with pytest.raises(TopologyError, match="split evenly"):
        resolve_topology(num_gpus=6, num_nodes=4)
    with pytest.raises(TopologyError, match="not 2 node"):
        resolve_topology(num_gpus=6, num_nodes=2, gpus_per_node=2)
    with pytest.raises(TopologyError, match="none detected"):
        resolve_topology()


def test_head_node() -> None:
    topo = Topology((1, 1), "t", (Host("alpha", 1), Host("beta", 1)), "h")
    assert is_head_node(topo, {"alpha"})
    assert not is_head_node(topo, {"beta"})
    assert is_head_node(Topology((8,), "t"), set())
