"""The world size a batch command works with, and where it came from (the flags, the GPUs
detected here, or an assumption said plainly); resolved by ``commands/worldsize.py``."""

from __future__ import annotations

from dataclasses import dataclass

from ds_wizard.core.batch.topology import Topology


@dataclass(frozen=True)
class WorldSize:
    """The data-parallel size the batch formula uses, and where it came from."""

    data_parallel: int
    total_ranks: int
    source: str  # one line for the user: "--num-gpus 4", "4 GPUs detected", "assumed …"
    flags: str  # the flags that reproduce it, for suggested commands
    topology: Topology | None = None

    def describe(self) -> str:
        where = (f"{self.topology.layout()}, " if self.topology is not None
                 and self.topology.multi_node else "")
        if self.data_parallel == self.total_ranks:
            return f"world size {self.data_parallel} ({where}{self.source})"
        return (f"data-parallel size {self.data_parallel} = {self.total_ranks} ranks / "
                f"model-parallel degrees ({where}{self.source})")
