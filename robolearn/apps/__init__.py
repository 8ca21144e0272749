"""The apps layer: one module per job, each composing the stages below it (DESIGN.md, "Layout").

=============  ============================================================================
module         job
=============  ============================================================================
``collect``    scripted-expert demonstrations of a task into a Zarr store
``record``     teleoperated demonstrations on a robot (twin or real) into a Zarr store
``replay``     a recorded episode played back through the control loop
``train``      train (or resume) the configured policy
``rl``         refine a trained policy with residual RL (PPO on a per-step residual)
``distill``    distil a diffusion policy into a 1-3 step consistency policy
``convert``    datasets between formats: LeRobot v3 <-> Zarr, robomimic HDF5 -> Zarr
``eval``       held-out rollouts of a checkpoint: success rate, JSON, report, videos
``deploy``     a policy on a robot through the HAL (runner, scheduler, safety layer, loop)
``quickstart`` collect, train, evaluate and report on the embedded defaults
=============  ============================================================================

``robolearn.cli`` only parses arguments and prints; no stage (data, policies, train, envs, eval,
robots, teleop) imports from here.
"""
