"""Models: the VLA, the progress critic, RL heads; registry; checkpoints."""
