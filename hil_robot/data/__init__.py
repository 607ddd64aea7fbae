"""Episode store, recorder, replay and dataset interop (DESIGN §3-4). numpy only, no torch.

    store = EpisodeStore("runs/x/store")           # crash-safe folder of episodes
    rec = Recorder(store, pre_intervention_k=15)   # controller: rec.add(step); rec.end_episode(success)
    replay = StoreReplay([store.root], capacity_steps=50_000)
    batch = replay.sample(256, horizon=10)         # dict of numpy arrays (see replay.py)

Formats and figures: docs/data.md.
"""

from hil_robot.data.episode import Episode
from hil_robot.data.format import EpisodeCorruptError, StoreError
from hil_robot.data.recorder import Recorder
from hil_robot.data.replay import ReplayBuffer
from hil_robot.data.episode import read_episode_file
from hil_robot.data.store import EpisodeStore
from hil_robot.data.store_replay import StoreReplay

__all__ = [
    "Episode", "EpisodeCorruptError", "EpisodeStore", "Recorder", "ReplayBuffer", "StoreError", "StoreReplay",
    "read_episode_file",
]
