//! `graft games`: a short PPO run on the cart-pole writes its policy, rollouts, metrics and a
//! summary whose curve adds up; the policy renders into an animated PNG; a resumed run after
//! the end changes nothing; unknown keys and impossible contexts are refused by name.

mod common;

fn graft(args: &[&str]) -> std::process::Output {
    common::graft(args).output().unwrap()
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("cartpole.toml");
    let out = dir.join("run");
    std::fs::write(
        &path,
        format!(
            "[env]\nkind = \"cartpole\"\ngravity = 11.0\n\n[model]\nhidden = [16]\n\n[ppo]\nupdates = 3\nenvs = 2\nsteps_per_update = 128\nepochs = 2\nminibatches = 2\nseed = 4\n\n[output]\ndir = {:?}\n",
            out.to_str().unwrap()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_short_cartpole_run_trains_measures_and_renders() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let run = graft(&["games", "train", cfg.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let s: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(s["env"], "cartpole(gravity=11.0)");
    assert_eq!(s["threshold"], 475.0);
    assert_eq!(s["updates"], 3);
    let curve = s["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 3);
    assert_eq!(curve[2]["episodes"], s["episodes"]);
    assert!(s["steps"].as_u64().unwrap() >= 3 * 128);
    assert_eq!(s["first_return"], curve[0]["mean_return"]);
    // Two trunks of one hidden layer (4 -> 16) and the two heads (16 -> 2, 16 -> 1).
    assert_eq!(s["trainable_params"], 2 * (4 * 16 + 16) + (16 * 2 + 2) + (16 + 1));
    let out = dir.path().join("run");
    let rollouts = std::fs::read_to_string(out.join("rollouts.jsonl")).unwrap();
    assert_eq!(rollouts.lines().count(), 3);
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 3 * 2 * 2);

    let anim = dir.path().join("episode.png");
    let render =
        graft(&["games", "render", out.to_str().unwrap(), "--out", anim.to_str().unwrap(), "--every", "3", "--json"]);
    assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
    let r: serde_json::Value = serde_json::from_slice(&render.stdout).unwrap();
    let length = r["length"].as_u64().unwrap();
    assert_eq!(r["return"].as_f64().unwrap(), length as f64, "a cart-pole step earns 1");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&anim).unwrap()));
    let frames = decoder.read_info().unwrap().info().animation_control().unwrap().num_frames;
    assert_eq!(frames as u64, r["frames"].as_u64().unwrap());

    // Resumed after its end: nothing more to train, the same summary.
    let again = graft(&["games", "train", cfg.to_str().unwrap(), "--resume", "--json"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let s2: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(s2["curve"], s["curve"]);

    // Transfer: a warm start on a heavier cart-pole takes every tensor; a frozen trunk trains
    // only the heads; a progressive column trains itself and its adapters; the acrobot (6 observations, 3 actions) can take only the value head of a
    // one-layer cart-pole policy.
    let target = |name: &str, env: &str, method: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "[env]\n{env}\n\n[ppo]\nupdates = 1\nenvs = 2\nsteps_per_update = 64\nepochs = 1\nminibatches = 2\n\n[transfer]\nfrom = {:?}\nmethod = \"{method}\"\n\n[output]\ndir = {:?}\n",
            out.to_str().unwrap(),
            dir.path().join(name).to_str().unwrap()
        );
        std::fs::write(&path, text).unwrap();
        let run = graft(&["games", "train", path.to_str().unwrap(), "--json"]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        serde_json::from_slice::<serde_json::Value>(&run.stdout).unwrap()
    };
    let warm = target("warm", "kind = \"cartpole\"\ngravity = 14.0", "warm_start");
    assert_eq!(warm["transfer"]["method"], "warm_start");
    assert_eq!(warm["transfer"]["kept"].as_array().unwrap().len(), 8);
    let frozen = target("frozen", "kind = \"cartpole\"\ngravity = 14.0", "frozen_trunk");
    assert_eq!(frozen["trainable_params"], (16 * 2 + 2) + (16 + 1));
    // A progressive column reads the frozen source through adapters (rank 16) into its heads;
    // the saved policy holds the source and plays.
    let prog = target("prog", "kind = \"cartpole\"\ngravity = 14.0", "progressive");
    assert!(prog["transfer"]["kept"].as_array().unwrap().iter().all(|n| n.as_str().unwrap().starts_with("source.")));
    let column = 2 * (16 * 4 + 16) + (16 * 2 + 2) + (16 + 1);
    assert_eq!(prog["trainable_params"], column + (16 * 16 + 2 * 16) + (16 * 16 + 16));
    let frames = dir.path().join("prog.png");
    let render =
        graft(&["games", "render", dir.path().join("prog").to_str().unwrap(), "--out", frames.to_str().unwrap()]);
    assert!(render.status.success() && frames.exists(), "{}", String::from_utf8_lossy(&render.stderr));
    let acro = target("acro", "kind = \"acrobot\"", "remap");
    assert_eq!(acro["transfer"]["kept"], serde_json::json!(["value.bias", "value.weight"]));
    assert_eq!(acro["env"], "acrobot");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, std::fs::read_to_string(dir.path().join("acro.toml")).unwrap().replace("remap", "warm_start"))
        .unwrap();
    let refused = graft(&["games", "train", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("use `remap`"));
}

#[test]
fn bad_game_configs_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let bad = graft(&["games", "train", cfg.to_str().unwrap(), "--set", "env.gravty=3.0"]);
    assert_eq!(bad.status.code(), Some(3), "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("gravty"));
    let bad = graft(&["games", "train", cfg.to_str().unwrap(), "--set", "env.pole_mass=0.0"]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cartpole: `pole_mass` must be a finite number above 0"));
    let bad = graft(&["games", "train", cfg.to_str().unwrap(), "--set", "ppo.minibatches=0"]);
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ppo:"));
    let none = graft(&["games", "render", dir.path().to_str().unwrap(), "--out", "x.png"]);
    assert_eq!(none.status.code(), Some(3), "{}", String::from_utf8_lossy(&none.stderr));
    assert!(String::from_utf8_lossy(&none.stderr).contains("is it a `graft games train` folder?"));
    let help = graft(&["games", "train", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("graft games train configs/games-cartpole.toml"));
}

/// `agent.algorithm = "dqn"`: the same run folder and summary, the actor trained as Q-values.
#[test]
fn a_short_dqn_run_goes_through_the_same_command() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let sets = [
        "agent.algorithm=\"dqn\"",
        "dqn.updates=2",
        "dqn.steps_per_update=50",
        "dqn.learning_starts=50",
        "dqn.train_steps=3",
        "dqn.buffer_size=500",
    ];
    let mut args = vec!["games", "train", cfg.to_str().unwrap(), "--json"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let run = graft(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let s: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(s["algorithm"], "dqn");
    assert_eq!(s["updates"], 2);
    // The actor's trunk (4 -> 16) and the policy head (16 -> 2) read as Q-values; no critic.
    assert_eq!(s["trainable_params"], (4 * 16 + 16) + (16 * 2 + 2));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    args.extend(["--set", "dqn.buffer_size=10"]);
    let bad = graft(&args);
    assert_eq!(bad.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("dqn: `buffer_size`"));
}
