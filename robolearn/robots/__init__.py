"""The hardware abstraction layer (DESIGN.md, "The HAL and the control loop").

``types`` (Robot protocol, state, commands, limits, faults), ``safety`` (the layer every command
passes), ``loop`` (fixed-rate loop on absolute deadlines), ``scheduler`` (timestamped chunks to one
action per period), ``runner`` (the policy in its own process), ``session`` (the loop body shared by
deploy, record and replay), ``config`` (``hardware/*.yaml`` and the driver factory), and the
drivers: ``twin`` (MuJoCo, in-process), ``socket_twin`` (its own process, fault injection), ``ur``
(ur_rtde), ``feetech`` (SO-100/101 on the vendor SDK; ``feetech_emulator`` for tests).
"""
