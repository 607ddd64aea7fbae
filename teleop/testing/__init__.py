"""Test and benchmark helpers for teleop: headless-browser bridge, scripted OpenXR runtime."""
