"""The instruction embedding is the real pretrained MiniLM, frozen and cached."""

from __future__ import annotations

import numpy as np
import torch

from policies.text import TEXT_DIM, embed_instructions, get_encoder

torch.set_num_threads(1)


def test_semantically_similar_instructions_are_closer():
    e = embed_instructions(["pick up the red cube", "grasp the red block and lift it",
                            "insert the peg into the hole", "what a lovely sunny day"])
    assert e.shape == (4, TEXT_DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.1 and sim[0, 1] > sim[0, 3] + 0.1
    # word overlap alone does not decide: a paraphrase without shared nouns stays close
    p = embed_instructions(["push the puck to the target", "slide the disc onto the goal marker", "push the red cube up"])
    assert p[0] @ p[1] > 0.4


def test_cached_and_frozen():
    enc = get_encoder()
    a = enc.embed(["stack the green cube on the blue cube"])
    size = enc.cache_size
    b = enc.embed(["stack the green cube on the blue cube"] * 3)
    assert enc.cache_size == size
    np.testing.assert_array_equal(b, np.repeat(a, 3, axis=0))
    assert not any(p.requires_grad for p in enc._model.parameters())
    assert enc._model.config.hidden_size == 384 and enc._model.config.num_hidden_layers == 6
