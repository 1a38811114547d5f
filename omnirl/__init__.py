"""omnirl: Omni-Training for data-efficient meta-reinforcement learning.

Importing ``omnirl`` is cheap (no torch, no MuJoCo): the command line starts fast, and the
families (``omnirl.envs``) and agents (``omnirl.agents``) are resolved by name when used.
"""

__version__ = "0.1.0"
