"""hil_robot: human-in-the-loop robot learning runtime (contracts, transport, store, control, learning)."""

__version__ = "0.1.0"
