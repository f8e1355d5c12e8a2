"""The embedded PBX simulator: a living virtual PBX behind the PbxBackend port.

`SimulatorBackend` runs one virtual PBX per name (default demo: `MojaCentrala`) and
delivers Asterisk-shaped activity to a PbxSink: contract events, CDR rows, WAV recordings
and transcriptions. `backfill` fills a fresh PBX with a week of history.
"""

from cloudpbx.adapters.simulator.backend import SimulatorBackend
from cloudpbx.adapters.simulator.backfill import HistorySink, backfill

__all__ = ["HistorySink", "SimulatorBackend", "backfill"]
