"""The background learner (DESIGN §4): one file per algorithm behind ``update(batch) -> metrics``,
``state_dict()`` and ``load_state_dict()``; the learner process in ``loop.py``; torch lives here."""

# name -> "module:class"; imported lazily so `hil-robot` commands that do not learn never import torch
ALGORITHMS: dict[str, str] = {
    "weighted_bc": "hil_robot.learn.weighted_bc:WeightedBC",
    "bc": "hil_robot.learn.weighted_bc:WeightedBC",
    "rlpd": "hil_robot.learn.rlpd:RLPD",
}
