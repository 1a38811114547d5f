"""omnirl task families, registered with Gymnasium and with omnirl's family registry.

Importing this package registers every family; nothing here imports MuJoCo (the entry points
are strings, loaded when an env is made).
"""

from gymnasium.envs.registration import register

from omnirl.envs.tasks import (
    DIRECTION_TASKS,
    HOPPER_TASKS,
    NAVIGATION_TASKS,
    VELOCITY_DOMAIN_TASKS,
    VELOCITY_TASKS,
    WALKER2D_TASKS,
)
from omnirl.registry import register_family

# --- 2D navigation --------------------------------------------------------------------------
register(
    id="omnirl/Navigation2D-v1",
    entry_point="omnirl.envs.navigation:Navigation2DEnv",
    vector_entry_point="omnirl.envs.navigation:Navigation2DVectorEnv",
    max_episode_steps=100,
)
register_family(
    "navigation-2d",
    "omnirl/Navigation2D-v1",
    NAVIGATION_TASKS,
    optimum="omnirl.envs.navigation:optimal_task_returns",
)

# --- HalfCheetah velocity -------------------------------------------------------------------
register(
    id="omnirl/HalfCheetahVel-v0",
    entry_point="omnirl.envs.half_cheetah:HalfCheetahVelEnv",
    vector_entry_point="omnirl.envs.half_cheetah:HalfCheetahVelVectorEnv",
    max_episode_steps=200,
)
register_family("halfcheetah-vel", "omnirl/HalfCheetahVel-v0", VELOCITY_TASKS)

# --- HalfCheetah direction ------------------------------------------------------------------
register(
    id="omnirl/HalfCheetahDir-v0",
    entry_point="omnirl.envs.half_cheetah:HalfCheetahDirEnv",
    vector_entry_point="omnirl.envs.half_cheetah:HalfCheetahDirVectorEnv",
    max_episode_steps=200,
)
register_family("halfcheetah-dir", "omnirl/HalfCheetahDir-v0", DIRECTION_TASKS)

# --- HalfCheetah velocity in physics domains ------------------------------------------------
register(
    id="omnirl/HalfCheetahVelDomains-v0",
    entry_point="omnirl.envs.half_cheetah:HalfCheetahVelDomainsEnv",
    vector_entry_point="omnirl.envs.half_cheetah:HalfCheetahVelDomainsVectorEnv",
    max_episode_steps=200,
)
register_family("halfcheetah-vel-domains", "omnirl/HalfCheetahVelDomains-v0", VELOCITY_DOMAIN_TASKS)

# --- Walker2d rand-params (PEARL) -----------------------------------------------------------
register(
    id="omnirl/Walker2dRandParams-v0",
    entry_point="omnirl.envs.walker2d:Walker2dRandParamsEnv",
    vector_entry_point="omnirl.envs.walker2d:Walker2dRandParamsVectorEnv",
    max_episode_steps=200,
)
register_family("walker2d-rand-params", "omnirl/Walker2dRandParams-v0", WALKER2D_TASKS)

# --- Hopper rand-params (PEARL) -------------------------------------------------------------
register(
    id="omnirl/HopperRandParams-v0",
    entry_point="omnirl.envs.hopper:HopperRandParamsEnv",
    vector_entry_point="omnirl.envs.hopper:HopperRandParamsVectorEnv",
    max_episode_steps=200,
)
register_family("hopper-rand-params", "omnirl/HopperRandParams-v0", HOPPER_TASKS)
