#!/usr/bin/env python3
"""Reference trajectories for graft's game environments (crates/graft/tests/games.rs).

Runs Gymnasium's CartPole-v1 and Acrobot-v1 (the unwrapped environments) from fixed start
states under fixed action sequences, for the default constants and for one changed context
each, and records every step's full float64 state, the float32 observation, the reward and the
termination flag. A changed context is applied by setting the environment's attributes (and,
for the cart-pole, the two products its constructor derives from them: total mass and
pole mass times half-length).

Gymnasium is needed only to run this script, never by graft. Example:

  python3 scripts/games-golden.py > tests/golden/games/classic_control.json
"""
import json
import math
import sys

import gymnasium as gym
import numpy as np


def cartpole(ctx):
    env = gym.make("CartPole-v1").unwrapped
    env.gravity = ctx["gravity"]
    env.masscart = ctx["cart_mass"]
    env.masspole = ctx["pole_mass"]
    env.length = ctx["pole_length"]
    env.force_mag = ctx["force"]
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length
    env.reset(seed=0)
    return env


def acrobot(ctx):
    env = gym.make("Acrobot-v1").unwrapped
    env.LINK_LENGTH_1 = ctx["link_length_1"]
    env.LINK_MASS_1 = ctx["link_mass_1"]
    env.LINK_MASS_2 = ctx["link_mass_2"]
    env.LINK_COM_POS_1 = ctx["link_com_1"]
    env.LINK_COM_POS_2 = ctx["link_com_2"]
    env.LINK_MOI = ctx["link_moi"]
    env.reset(seed=0)
    return env


def run(env, state, policy, limit):
    """Steps from `state` with `policy(step, obs)` until termination or `limit` steps."""
    env.state = np.array(state, dtype=np.float64)
    obs = None
    steps, actions = [], []
    for i in range(limit):
        a = policy(i, obs, env.state)
        obs, reward, terminated, _, _ = env.step(a)
        actions.append(int(a))
        steps.append({
            "state": [float(v) for v in env.state],
            "observation": [float(v) for v in obs],
            "reward": float(reward),
            "terminated": bool(terminated),
        })
        if terminated:
            break
    return {"start": state, "actions": actions, "steps": steps}


def main():
    cp_default = dict(gravity=9.8, cart_mass=1.0, pole_mass=0.1, pole_length=0.5, force=10.0)
    cp_variant = dict(gravity=12.0, cart_mass=1.5, pole_mass=0.2, pole_length=0.8, force=15.0)
    ac_default = dict(link_length_1=1.0, link_mass_1=1.0, link_mass_2=1.0, link_com_1=0.5, link_com_2=0.5,
                      link_moi=1.0)
    ac_variant = dict(link_length_1=1.2, link_mass_1=0.8, link_mass_2=1.3, link_com_1=0.6, link_com_2=0.4,
                      link_moi=0.9)
    pattern = lambda i, obs, s: [1, 1, 0, 1, 0, 0, 1, 0][i % 8]
    push_right = lambda i, obs, s: 1
    cases = {"cartpole": [], "acrobot": []}
    for ctx in (cp_default, cp_variant):
        start = [0.01, -0.02, 0.03, 0.04]
        cases["cartpole"].append({"context": ctx, **run(cartpole(ctx), start, pattern, 60)})
        cases["cartpole"].append({"context": ctx, **run(cartpole(ctx), start, push_right, 500)})
    for ctx in (ac_default, ac_variant):
        start = [0.05, -0.03, 0.02, 0.01]
        three = lambda i, obs, s: [2, 2, 1, 0, 0, 1, 2, 0, 1][i % 9]
        # Pumping energy: torque along the second joint's velocity reaches the goal.
        pump = lambda i, obs, s: 2 if s[3] >= 0 else 0
        cases["acrobot"].append({"context": ctx, **run(acrobot(ctx), start, three, 60)})
        cases["acrobot"].append({"context": ctx, **run(acrobot(ctx), start, pump, 500)})
    json.dump({"gymnasium": gym.__version__, "numpy": np.__version__, **cases}, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
