"""Tiny LeRobot checkpoints with random weights, built offline (no hub): for tests, benchmarks and a
first ``policy=lerobot`` run before a real checkpoint is at hand. Runs in the LeRobot environment.

    .venv-lerobot/bin/python -m policies.lerobot_tiny out=/tmp/act_tiny type=act
    .venv-lerobot/bin/python -m policies.lerobot_tiny out=/tmp/smolvla_tiny type=smolvla

Each directory is what LeRobot's ``save_pretrained`` writes (config.json, model.safetensors and the
pre/post-processor files carrying the normalisation statistics), so ``policies.lerobot_backend`` loads
it exactly as it loads a trained checkpoint. SmolVLA needs a VLM config and a tokenizer by name; the
generator writes a two-layer SmolVLM config, a word-level tokenizer (with SmolVLM's image tokens) and
its processor into ``<out>/vlm`` and points ``vlm_model_name`` there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

TYPES = ("act", "smolvla")
# our sim observation: two cameras, state [15]; native action: normalised EE delta [7]
DEFAULT_CAMERAS = ("front", "wrist")
STATE_DIM, ACTION_DIM = 15, 7
_WORDS = ("pick up the red cube lift it push to target insert peg stack cubes on blue green and a of place put move grasp "
          "open close gripper left right up down slowly carefully").split()


def write_tiny_vlm(out: Path, image_size: int) -> Path:
    """A two-layer SmolVLM config + word-level tokenizer + processor in ``out`` (loadable offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (PreTrainedTokenizerFast, SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor,
                              SmolVLMVideoProcessor)

    special = ["<unk>", "<pad>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
               "<image>", "<video>", "<row_1_col_1>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*special, *_WORDS, *[str(d) for d in range(10)], ".", ",", "\n"]))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<|im_start|>",
        eos_token="<end_of_utterance>", model_max_length=256,
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                              "image_token": "<image>", "end_of_utterance_token": "<end_of_utterance>"})
    patch = 16
    scale = 2
    image_seq_len = (image_size // patch) ** 2 // scale**2
    config = SmolVLMConfig(
        text_config={"model_type": "llama", "vocab_size": len(vocab), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                     "max_position_embeddings": 512, "pad_token_id": vocab["<pad>"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": patch},
        scale_factor=scale, image_token_id=vocab["<image>"], vocab_size=len(vocab))
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    image_processor = SmolVLMImageProcessor(do_resize=False, do_image_splitting=False,
                                            max_image_size={"longest_edge": image_size}, size={"longest_edge": image_size})
    processor = SmolVLMProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=SmolVLMVideoProcessor(), image_seq_len=image_seq_len)
    processor.save_pretrained(out)
    return out


def _features(cameras: tuple[str, ...], image_hw: tuple[int, int], state_dim: int, action_dim: int) -> tuple[dict, dict]:
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {f"observation.images.{c}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, *image_hw)) for c in cameras}
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))
    return inputs, {"action": PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))}


def _stats(cameras: tuple[str, ...], state_dim: int, action_dim: int) -> dict[str, dict[str, Any]]:
    """Normalisation statistics as a dataset would give them (actions: our EE delta lives in [-1, 1])."""
    stats: dict[str, dict[str, Any]] = {
        "observation.state": {"mean": np.zeros(state_dim, np.float32), "std": np.full(state_dim, 0.5, np.float32),
                              "min": np.full(state_dim, -1.0, np.float32), "max": np.ones(state_dim, np.float32)},
        "action": {"mean": np.zeros(action_dim, np.float32), "std": np.full(action_dim, 0.5, np.float32),
                   "min": np.full(action_dim, -1.0, np.float32), "max": np.ones(action_dim, np.float32)},
    }
    for c in cameras:
        stats[f"observation.images.{c}"] = {"mean": np.full((3, 1, 1), 0.5, np.float32),
                                            "std": np.full((3, 1, 1), 0.25, np.float32)}
    return stats


def build_tiny(kind: str, out: str | Path, *, cameras: tuple[str, ...] = DEFAULT_CAMERAS, image_hw: tuple[int, int] = (64, 64),
               state_dim: int = STATE_DIM, action_dim: int = ACTION_DIM, chunk_size: int = 10, n_action_steps: int = 5,
               seed: int = 0) -> Path:
    """Write a random-weight ``kind`` checkpoint (config.json, model.safetensors, processors) to ``out``."""
    import torch
    from lerobot.policies.factory import make_pre_post_processors

    if kind not in TYPES:
        raise ValueError(f"type={kind!r}; tiny checkpoints exist for {', '.join(TYPES)}")
    out = Path(out)
    torch.manual_seed(seed)
    inputs, outputs = _features(cameras, image_hw, state_dim, action_dim)
    common = dict(input_features=inputs, output_features=outputs, chunk_size=chunk_size, n_action_steps=n_action_steps,
                  device="cpu", push_to_hub=False)
    if kind == "act":
        from lerobot.policies.act.configuration_act import ACTConfig
        from lerobot.policies.act.modeling_act import ACTPolicy

        config = ACTConfig(**common, vision_backbone="resnet18", pretrained_backbone_weights=None, dim_model=64,
                           n_heads=2, dim_feedforward=128, n_encoder_layers=1, n_decoder_layers=1, use_vae=False)
        policy = ACTPolicy(config)
    else:
        from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
        from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

        vlm = write_tiny_vlm(out / "vlm", image_size=image_hw[0])
        config = SmolVLAConfig(**common, vlm_model_name=str(vlm.resolve()), load_vlm_weights=False,
                               resize_imgs_with_padding=image_hw, num_vlm_layers=2, num_expert_layers=-1,
                               self_attn_every_n_layers=2, expert_width_multiplier=0.5, max_state_dim=32,
                               max_action_dim=32, num_steps=4, tokenizer_max_length=16)
        policy = SmolVLAPolicy(config)
    pre, post = make_pre_post_processors(config, dataset_stats=_stats(cameras, state_dim, action_dim))
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out


def main(argv: list[str]) -> int:
    opts = {"out": "", "type": "act", "image": "64", "chunk_size": "10", "n_action_steps": "5"}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in opts:
            print(f"unknown argument {a!r}; use {' '.join(k + '=...' for k in opts)}", file=sys.stderr)
            return 2
        opts[key] = value
    if not opts["out"]:
        print("out=DIR is required", file=sys.stderr)
        return 2
    side = int(opts["image"])
    path = build_tiny(opts["type"], opts["out"], image_hw=(side, side), chunk_size=int(opts["chunk_size"]),
                      n_action_steps=int(opts["n_action_steps"]))
    print(f"wrote a random-weight {opts['type']} checkpoint to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
