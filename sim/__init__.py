"""MuJoCo world: scenes, tasks, Gymnasium envs, scripted expert, simulated operator."""
