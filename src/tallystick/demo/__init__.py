"""The `tallystick demo`: the integration guide end to end on one machine, with no internet."""
