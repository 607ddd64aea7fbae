"""Operator devices, pose mapping, intervention state machine, operator web screen."""
