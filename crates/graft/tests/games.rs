//! Game environments against reference trajectories and by hand: the cart-pole and the acrobot
//! step for step against Gymnasium's `CartPole-v1` / `Acrobot-v1` (default constants and a
//! changed context each; `scripts/games-golden.py`, values in
//! `tests/golden/games/classic_control.json`), one cart-pole step computed from the equations in
//! the test, determinism by seed, the maze's moves, walls, slip, goal reward and view, rendering,
//! and bad contexts refused by name.

mod common;

use graft::games::render::{write_apng, write_png};
use graft::games::{Acrobot, AcrobotContext, CartPole, CartPoleContext, Env, EnvSpec, GridContext, GridWorld};
use serde_json::Value;

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Steps `env` through a reference case and checks every step: the state within `tol` of the
/// reference (relative to 1 + |value|), the f32 observation within `tol` too, the reward and
/// the end exactly.
fn replay<E: Env>(env: &mut E, state: impl Fn(&E) -> [f64; 4], case: &Value, tol: f64) -> usize {
    let actions: Vec<usize> =
        case["actions"].as_array().unwrap().iter().map(|a| a.as_u64().unwrap() as usize).collect();
    let steps = case["steps"].as_array().unwrap();
    assert_eq!(actions.len(), steps.len());
    let mut worst = 0.0f64;
    for (i, (&a, want)) in actions.iter().zip(steps).enumerate() {
        let got = env.step(a).unwrap();
        let s = state(env);
        for (g, w) in s.iter().zip(f64s(&want["state"])) {
            worst = worst.max((g - w).abs() / (1.0 + w.abs()));
        }
        for (g, w) in got.observation.iter().zip(f64s(&want["observation"])) {
            assert!(((*g as f64) - w).abs() <= tol * (1.0 + w.abs()), "step {i}: observation {g} vs {w}");
        }
        assert!(worst <= tol, "step {i}: state {s:?} vs {:?} (relative error {worst:e})", want["state"]);
        assert_eq!(got.reward as f64, want["reward"].as_f64().unwrap(), "step {i}: reward");
        assert_eq!(got.terminated, want["terminated"].as_bool().unwrap(), "step {i}: terminated");
    }
    steps.len()
}

fn context<T: serde::de::DeserializeOwned>(case: &Value) -> T {
    serde_json::from_value(case["context"].clone()).unwrap()
}

fn start(case: &Value) -> [f64; 4] {
    f64s(&case["start"]).try_into().unwrap()
}

#[test]
fn cartpole_follows_gymnasium_step_for_step() {
    let golden = common::golden_json("games/classic_control.json");
    let mut terminations = Vec::new();
    for case in golden["cartpole"].as_array().unwrap() {
        let mut env = CartPole::new(context(case), 0).unwrap();
        env.set_state(start(case));
        terminations.push(replay(&mut env, CartPole::state, case, 1e-12));
    }
    // Every case ends with the pole down or the cart off the track, at its reference step.
    assert_eq!(terminations, [34, 10, 56, 13]);
}

#[test]
fn acrobot_follows_gymnasium_step_for_step() {
    let golden = common::golden_json("games/classic_control.json");
    let mut lengths = Vec::new();
    for case in golden["acrobot"].as_array().unwrap() {
        let mut env = Acrobot::new(context(case), 0).unwrap();
        env.set_state(start(case));
        lengths.push(replay(&mut env, Acrobot::state, case, 1e-12));
    }
    // The open-loop cases run 60 steps; the energy-pumping ones reach the goal at their
    // reference step (reward 0 there, −1 before).
    assert_eq!(lengths, [60, 73, 60, 94]);
}

/// One Euler step of the cart-pole equations, written out here with other constants.
#[test]
fn one_cartpole_step_by_hand() {
    let ctx = CartPoleContext {
        gravity: 9.0,
        cart_mass: 2.0,
        pole_mass: 0.5,
        pole_length: 0.6,
        force: 5.0,
        ..Default::default()
    };
    let mut env = CartPole::new(ctx, 0).unwrap();
    let s0 = [0.1, -0.2, 0.05, 0.3];
    env.set_state(s0);
    let step = env.step(0).unwrap();
    let (f, m, mp, l, g, tau) = (-5.0f64, 2.5f64, 0.5f64, 0.6f64, 9.0f64, 0.02f64);
    let (st, ct) = (0.05f64.sin(), 0.05f64.cos());
    let temp = (f + mp * l * 0.3 * 0.3 * st) / m;
    let theta_acc = (g * st - ct * temp) / (l * (4.0 / 3.0 - mp * ct * ct / m));
    let x_acc = temp - mp * l * theta_acc * ct / m;
    let want = [0.1 + tau * -0.2, -0.2 + tau * x_acc, 0.05 + tau * 0.3, 0.3 + tau * theta_acc];
    for (g, w) in env.state().iter().zip(want) {
        assert!((g - w).abs() < 1e-15, "{:?} vs {want:?}", env.state());
    }
    assert_eq!(step.observation, want.map(|v| v as f32).to_vec());
    assert_eq!((step.reward, step.terminated, step.truncated), (1.0, false, false));
}

#[test]
fn episodes_repeat_by_seed_and_differ_by_episode() {
    let spec = EnvSpec::Cartpole(CartPoleContext::default());
    let run = |seed: u64, episode: u64| {
        let mut env = spec.make(seed).unwrap();
        let first = env.reset(episode);
        let mut total = 0.0;
        let mut t = 0;
        loop {
            let s = env.step(t % 2).unwrap();
            total += s.reward;
            t += 1;
            if s.done() {
                break;
            }
        }
        (first, total)
    };
    assert_eq!(run(3, 7), run(3, 7));
    assert_ne!(run(3, 7).0, run(3, 8).0);
    assert_ne!(run(3, 7).0, run(4, 7).0);
    let first = run(3, 7).0;
    assert!(first.iter().all(|v| (-0.05..0.05).contains(v)), "{first:?}");

    // The acrobot draws its start the same way, rounded to f32.
    let mut a = Acrobot::new(AcrobotContext::default(), 1).unwrap();
    let obs = a.reset(0);
    assert_eq!(obs.len(), 6);
    assert!(a.state().iter().all(|v| (-0.1..0.1).contains(v) && (*v as f32) as f64 == *v));
}

#[test]
fn cartpole_is_truncated_at_its_step_limit() {
    let mut env = CartPole::new(CartPoleContext { max_steps: 5, ..Default::default() }, 0).unwrap();
    env.reset(0);
    let ends: Vec<(bool, bool)> =
        (0..5).map(|i| env.step(i % 2).map(|s| (s.terminated, s.truncated)).unwrap()).collect();
    assert_eq!(ends.last(), Some(&(false, true)));
    assert!(ends[..4].iter().all(|&e| e == (false, false)));
    let err = env.step(0).unwrap_err().to_string();
    assert!(err.contains("step after the episode ended"), "{err}");
    env.reset(1);
    assert!(env.step(2).unwrap_err().to_string().contains("action 2 is out of range: it has 2 actions"));
}

fn grid(rows: &[&str]) -> GridContext {
    GridContext { layout: rows.iter().map(|r| r.to_string()).collect(), view: 3, ..GridContext::default() }
}

#[test]
fn gridworld_moves_sees_and_rewards() {
    let ctx = grid(&["#####", "#S..#", "#.#G#", "#####"]);
    let mut env = GridWorld::new(ctx.clone(), 0).unwrap();
    assert_eq!((env.observation_size(), env.actions()), (2 * 9 + 2, 4));
    let obs = env.reset(0);
    // The 3 x 3 window around (1, 1): walls above and left, floor right and below, the wall at
    // (2, 2); no goal in view; the goal is 1 row down and 2 columns right of 4 and 5.
    let walls = [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
    assert_eq!(&obs[..9], walls);
    assert_eq!(&obs[9..18], [0.0; 9]);
    assert_eq!(&obs[18..], [1.0 / 4.0, 2.0 / 5.0]);
    // Up is a wall: no move, no reward.
    let s = env.step(0).unwrap();
    assert_eq!((env.agent(), s.reward, s.done()), ((1, 1), 0.0, false));
    env.step(1).unwrap();
    let s = env.step(1).unwrap();
    assert_eq!(env.agent(), (1, 3));
    assert_eq!(s.observation[9 + 7], 1.0, "the goal is just below, in view");
    let s = env.step(2).unwrap();
    assert!(s.terminated && !s.truncated);
    assert_eq!(s.reward, 1.0 - 0.9 * 4.0 / 100.0);

    // A view of 5 gives observations of another size.
    let wide = GridWorld::new(GridContext { view: 5, ..ctx.clone() }, 0).unwrap();
    assert_eq!(wide.observation_size(), 2 * 25 + 2);

    // Without a start cell the start is drawn per episode, the same for the same seed.
    let open = grid(&["#####", "#...#", "#..G#", "#####"]);
    let starts = |seed| {
        let mut env = GridWorld::new(open.clone(), seed).unwrap();
        (0..8)
            .map(|e| {
                env.reset(e);
                env.agent()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(starts(5), starts(5));
    assert!(starts(5).iter().all(|&c| c != (2, 3)), "never on the goal");
    assert!(starts(5).iter().collect::<std::collections::BTreeSet<_>>().len() > 1);

    // Slip 1: every action is replaced by a random one; the walk is the seed's.
    let slippery = GridContext { slip: 1.0, ..ctx };
    let walk = |seed| {
        let mut env = GridWorld::new(slippery.clone(), seed).unwrap();
        env.reset(0);
        (0..10)
            .map(|_| {
                let _ = env.step(1);
                env.agent()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(walk(2), walk(2));
    let straight: Vec<(usize, usize)> = vec![(1, 2), (1, 3), (1, 3)];
    assert_ne!(walk(2)[..3], straight[..], "slip 1 does not always obey");
}

#[test]
fn bad_contexts_are_refused_by_name() {
    let err = |r: graft::Result<GridWorld>| r.unwrap_err().to_string();
    assert!(err(GridWorld::new(grid(&["###", "#S#", "###"]), 0)).contains("no goal"));
    assert!(err(GridWorld::new(grid(&["####", "#SG#", "##"]), 0)).contains("row 2 has 2 cells, row 0 has 4"));
    assert!(err(GridWorld::new(grid(&["####", "#SX#", "####"]), 0)).contains("`X` is not one of # . S G"));
    assert!(err(GridWorld::new(GridContext { view: 4, ..GridContext::default() }, 0)).contains("`view` must be odd"));
    assert!(err(GridWorld::new(GridContext { slip: 1.5, ..GridContext::default() }, 0)).contains("`slip`"));
    assert!(err(GridWorld::new(GridContext { goal: Some([0, 0]), ..GridContext::default() }, 0))
        .contains("not a floor cell"));
    let e = CartPole::new(CartPoleContext { gravity: -1.0, ..Default::default() }, 0).unwrap_err().to_string();
    assert!(e.contains("cartpole: `gravity` must be a finite number above 0"), "{e}");
    let e = Acrobot::new(AcrobotContext { dt: f64::NAN, ..Default::default() }, 0).unwrap_err().to_string();
    assert!(e.contains("acrobot: `dt`"), "{e}");

    // An `[env]` section: the kind, the context's keys, and nothing else.
    let spec: EnvSpec = toml::from_str("kind = \"cartpole\"\ngravity = 12.0").unwrap();
    assert_eq!(spec.label(), "cartpole(gravity=12.0)");
    assert_eq!(toml::from_str::<EnvSpec>("kind = \"acrobot\"").unwrap().label(), "acrobot");
    let bad = toml::from_str::<EnvSpec>("kind = \"cartpole\"\ngravty = 12.0").unwrap_err().to_string();
    assert!(bad.contains("gravty"), "{bad}");
    let bad = toml::from_str::<EnvSpec>("kind = \"pong\"").unwrap_err().to_string();
    assert!(bad.contains("pong"), "{bad}");
}

#[test]
fn frames_render_and_write_as_png_and_animation() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = CartPole::new(CartPoleContext::default(), 0).unwrap();
    env.set_state([0.5, 0.0, 0.2, 0.0]);
    let frame = env.render();
    assert_eq!(frame.dimensions(), (600, 400));
    // The cart (black) sits 0.5 m right of the centre: 62.5 pixels at 125 pixels per metre.
    assert_eq!(frame.get_pixel(362, 300).0, [0, 0, 0]);
    assert_eq!(frame.get_pixel(250, 300).0, [255, 255, 255]);
    let mut frames = vec![frame];
    env.step(1).unwrap();
    frames.push(env.render());
    write_png(&frames[0], &dir.path().join("frame.png")).unwrap();
    let back = image::open(dir.path().join("frame.png")).unwrap().to_rgb8();
    assert_eq!(back, frames[0]);
    let anim = dir.path().join("run.png");
    write_apng(&frames, 50, &anim).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&anim).unwrap()));
    let reader = decoder.read_info().unwrap();
    assert_eq!(reader.info().animation_control().map(|a| a.num_frames), Some(2));

    let g = GridWorld::new(GridContext::default(), 0).unwrap();
    assert_eq!(g.render().dimensions(), (7 * 24, 7 * 24));
    let a = Acrobot::new(AcrobotContext::default(), 0).unwrap();
    assert_eq!(a.render().dimensions(), (500, 500));
    let odd = write_apng(&[frames[0].clone(), g.render()], 50, &anim).unwrap_err().to_string();
    assert!(odd.contains("frames differ in size"), "{odd}");
}
