//! `graft fetch`: download named models and datasets into the cache, or list them.

use std::path::Path;

use anyhow::Result;
use graft::assets::{self, AssetSpec, CacheState, FetchOptions, Fetched};
use serde_json::json;

/// Download named assets into the cache (`$GRAFT_CACHE`, else ~/.cache/graft), or list them.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  graft fetch tweets gemma3-270m\n  graft fetch --list --json")]
pub struct Args {
    /// Asset names to fetch (see --list).
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    pub names: Vec<String>,
    /// List every registered asset: kind, package, whether it is cached, cache path.
    #[arg(long)]
    pub list: bool,
    /// Never download; fail if an asset is not already cached.
    #[arg(long)]
    pub offline: bool,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let cache = assets::cache_dir();
    if args.list {
        return list(&cache, args.json);
    }
    // Look every name up first so a typo fails before any download starts.
    let specs = args.names.iter().map(|n| assets::find(n)).collect::<Result<Vec<_>, _>>()?;
    let opts = FetchOptions { offline: args.offline, progress: &assets::stderr_progress };
    let mut done: Vec<(&AssetSpec, Fetched)> = Vec::with_capacity(specs.len());
    for spec in specs {
        let fetched = assets::ensure_in(&cache, spec, &opts)?;
        if !args.json {
            println!(
                "{}\t{}\t{} in {:.1} s",
                spec.name,
                fetched.path.display(),
                fetched.action.as_str(),
                fetched.seconds
            );
        }
        done.push((spec, fetched));
    }
    if args.json {
        let rows: Vec<_> = done
            .iter()
            .map(|(spec, f)| {
                json!({
                    "name": spec.name,
                    "kind": spec.kind.as_str(),
                    "path": f.path,
                    "action": f.action.as_str(),
                    "seconds": f.seconds,
                })
            })
            .collect();
        println!("{}", json!({ "cache_dir": cache, "fetched": rows }));
    }
    Ok(())
}

/// Prints the registry with each asset's cache state.
fn list(cache: &Path, as_json: bool) -> Result<()> {
    let rows: Vec<(&AssetSpec, CacheState)> =
        assets::registry().iter().map(|s| (s, assets::state_in(cache, s))).collect();
    if as_json {
        let assets: Vec<_> = rows
            .iter()
            .map(|(spec, state)| {
                json!({
                    "name": spec.name,
                    "kind": spec.kind.as_str(),
                    "packages": spec.packages.iter().map(|p| p.label()).collect::<Vec<_>>(),
                    "cached": *state == CacheState::Verified,
                    "state": state.as_str(),
                    "path": spec.main_path_in(cache),
                    "description": spec.description,
                    "licence": spec.licence,
                })
            })
            .collect();
        println!("{}", json!({ "cache_dir": cache, "assets": assets }));
        return Ok(());
    }
    let name_w = rows.iter().map(|(s, _)| s.name.len()).max().unwrap_or(4).max(4);
    let kind_w = rows.iter().map(|(s, _)| s.kind.as_str().len()).max().unwrap_or(4).max(4);
    let pkg_w = rows.iter().map(|(s, _)| short_package(s).len()).max().unwrap_or(7).max(7);
    println!("{:name_w$}  {:kind_w$}  {:pkg_w$}  {:10}  PATH", "NAME", "KIND", "PACKAGE", "CACHED");
    for (spec, state) in &rows {
        let cached = match state {
            CacheState::Verified => "yes",
            CacheState::Unverified => "unverified",
            CacheState::Missing => "no",
        };
        println!(
            "{:name_w$}  {:kind_w$}  {:pkg_w$}  {:10}  {}",
            spec.name,
            spec.kind.as_str(),
            short_package(spec),
            cached,
            spec.main_path_in(cache).display()
        );
    }
    Ok(())
}

/// The first package's label, with a count when the asset spans several packages.
fn short_package(spec: &AssetSpec) -> String {
    match spec.packages {
        [] => String::new(),
        [one] => one.label(),
        [first, rest @ ..] => format!("{} (+{} more)", first.label(), rest.len()),
    }
}
