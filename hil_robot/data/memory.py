"""Sirius class weights and bounded-memory eviction strategies (DESIGN §4).

Class weights: each segment class c gets a target share s_c of the loss; with n_c of N samples in
the buffer and uniform sampling, per-sample weight w_c = s_c * N / n_c makes E[w * loss] split as
the shares say, with mean weight 1 over the buffer.

* intervention (recovery + correction): ``sirius.intervention`` (0.5)
* pre_intervention: ``sirius.pre_intervention`` (0.002)
* demo: its natural share n_demo / N (or ``sirius.demo`` when >= 0)
* autonomous: whatever is left (clipped at 0)
* perturbation: 0 (the operator disturbs the scene on purpose; not behaviour to imitate)

Classes absent from the buffer drop out; autonomous takes what is left, and if there is no
autonomous data (or the shares exceed 1) the present shares are renormalised to sum to 1.

Eviction (when the buffer is full, which held episode goes first):

* ``fifo``: the oldest episode.
* ``filo``: first in, last out — the newest held episode goes, the oldest data stays.
* ``lifo_intervention``: least-intervention-first-out (fewest intervention steps; oldest on ties).
* ``mifo_intervention``: most-intervention-first-out (most intervention steps; oldest on ties).

With ``keep_demos`` demo episodes are only evicted when nothing else is left.
"""

from __future__ import annotations

import numpy as np

from hil_robot.config.learner import SiriusWeights
from hil_robot.types import SEGMENT_INDEX, Segment

STRATEGIES = ("fifo", "filo", "lifo_intervention", "mifo_intervention")
CLASS_NAMES = ("autonomous", "pre_intervention", "intervention", "demo", "perturbation")
# segment code -> class id (index into CLASS_NAMES)
SEGMENT_TO_CLASS = np.zeros(len(SEGMENT_INDEX), np.int8)
SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.AUTONOMOUS]] = 0
SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.PRE_INTERVENTION]] = 1
SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.RECOVERY]] = 2
SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.CORRECTION]] = 2
SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.DEMO]] = 3
SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.PERTURBATION]] = 4


def class_shares(counts: np.ndarray, sirius: SiriusWeights) -> np.ndarray:
    """counts: int [5] samples per class (CLASS_NAMES order) -> target loss share per class [5]."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    shares = np.zeros(len(CLASS_NAMES))
    if total <= 0:
        return shares
    shares[1] = sirius.pre_intervention
    shares[2] = sirius.intervention
    shares[3] = sirius.demo if sirius.demo >= 0 else counts[3] / total
    shares[4] = 0.0
    shares[counts == 0] = 0.0
    shares[0] = max(0.0, 1.0 - shares[1:].sum()) if counts[0] > 0 else 0.0  # autonomous: what is left
    if shares.sum() <= 0:  # e.g. only perturbation steps: fall back to uniform over what exists
        shares = (counts > 0).astype(np.float64)
    return shares / shares.sum()


def class_weights(counts: np.ndarray, sirius: SiriusWeights) -> np.ndarray:
    """Per-sample weight for each class [5] so that the loss shares match ``class_shares``."""
    counts = np.asarray(counts, np.float64)
    shares = class_shares(counts, sirius)
    total = counts.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(counts > 0, shares * total / np.maximum(counts, 1), 0.0)
    return w.astype(np.float32)


def pick_victim(
    strategy: str, order: np.ndarray, intervention_steps: np.ndarray, is_demo: np.ndarray, keep_demos: bool
) -> int:
    """Index (into the given arrays, one entry per held episode) of the episode to evict next.

    order: insertion counter (smaller = older); intervention_steps: per episode; is_demo: bool.
    """
    if len(order) == 0:
        raise ValueError("nothing to evict")
    candidates = np.arange(len(order))
    if keep_demos and (~is_demo).any():
        candidates = candidates[~is_demo]
    o, iv = order[candidates], intervention_steps[candidates]
    if strategy == "fifo":
        key = np.lexsort((o,))
    elif strategy == "filo":
        key = np.lexsort((-o,))
    elif strategy == "lifo_intervention":
        key = np.lexsort((o, iv))
    elif strategy == "mifo_intervention":
        key = np.lexsort((o, -iv))
    else:
        raise ValueError(f"unknown memory strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return int(candidates[key[0]])
