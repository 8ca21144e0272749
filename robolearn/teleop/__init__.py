"""Teleoperation: input devices mapped to end-effector velocities + gripper, and the record loop."""
