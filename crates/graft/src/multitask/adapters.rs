//! A bank of LoRA adapters, one per task (`multitask.adapters = "per_task"`, or beside a shared
//! adapter with `"shared_plus_task"`): every task's set is attached to the same projections of
//! the one model, and the task of the batch at hand decides which set is in use; the others are
//! parked (they act as if detached, receive no gradient, and the optimizer leaves them and their
//! moments alone). Each set is saved as a PEFT adapter folder of its own (summed with the shared
//! adapter, when there is one), with a [`TASK_FILE`] naming the task it serves.

use crate::adapters::lora::{self, LoraSet, LoraSpec};
use crate::models::llama::{Llama, StudentLineage};
use crate::{GraftError, Result};
use candle_core::Var;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file beside a per-task adapter's `adapter_config.json` that names its task (PEFT ignores
/// it).
pub const TASK_FILE: &str = "graft_task.json";

/// What [`TASK_FILE`] holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTag {
    /// The task this adapter serves.
    pub task: String,
    /// Every task of the run that trained it, in config order.
    pub tasks: Vec<String>,
}

/// One LoRA set per task, attached to one model.
#[derive(Debug)]
pub struct TaskAdapters {
    names: Vec<String>,
    sets: Vec<LoraSet>,
}

impl TaskAdapters {
    /// A bank for the tasks `names`: `first` (already attached, e.g. by the run's model setup)
    /// serves task 0, and a fresh set of `first`'s spec is attached for each further task `i`,
    /// its `A` drawn with seed `seed + i`. Task 0 is in use afterwards.
    pub fn attach(model: &mut Llama, first: LoraSet, names: &[String], seed: u64) -> Result<Self> {
        if names.is_empty() {
            return Err(GraftError::Input("per-task adapters need at least one task".into()));
        }
        let spec: LoraSpec = first.spec.clone();
        let mut sets = vec![first];
        for i in 1..names.len() {
            sets.push(lora::attach(model, &spec, seed.wrapping_add(i as u64))?);
        }
        let bank = Self { names: names.to_vec(), sets };
        bank.activate(0)?;
        Ok(bank)
    }

    /// A bank of fresh sets of `spec` for the tasks `names`, attached after whatever `model`
    /// already carries (a shared adapter stays in use beside it); task `i`'s `A` is drawn with
    /// seed `seed + i`. Task 0 is in use afterwards.
    pub fn attach_fresh(model: &mut Llama, spec: &LoraSpec, names: &[String], seed: u64) -> Result<Self> {
        if names.is_empty() {
            return Err(GraftError::Input("per-task adapters need at least one task".into()));
        }
        let first = lora::attach(model, spec, seed)?;
        Self::attach(model, first, names, seed)
    }

    /// Every set's trainable variables, named `task.{NAME}.{module}.lora_A` / `.lora_B`.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.names
            .iter()
            .zip(&self.sets)
            .flat_map(|(name, set)| set.named_vars().into_iter().map(move |(v, var)| (format!("task.{name}.{v}"), var)))
            .collect()
    }

    /// Puts task `task`'s set in use and parks every other one.
    pub fn activate(&self, task: usize) -> Result<()> {
        if task >= self.sets.len() {
            return Err(GraftError::Input(format!(
                "task index {task} is out of range: the run has {} tasks ({})",
                self.sets.len(),
                self.names.join(", ")
            )));
        }
        for (i, set) in self.sets.iter().enumerate() {
            set.clock.set_active(i == task);
        }
        Ok(())
    }

    /// Turns LoRA dropout on (training) or off (evaluation) in every set.
    pub fn set_training(&self, on: bool) {
        self.sets.iter().for_each(|s| s.clock.set_training(on));
    }

    /// Sets the micro-step whose dropout masks every set draws next.
    pub fn set_step(&self, step: u64) {
        self.sets.iter().for_each(|s| s.clock.set_step(step));
    }

    /// Saves each task's set as a PEFT folder `dir/NAME` with its [`TASK_FILE`] (and the
    /// student lineage of a smaller student, as a single adapter would carry); with `shared`,
    /// each folder holds the sum of the shared adapter and the task's ([`lora::concat`]), the
    /// whole adapter the task is served by. Returns the folders in task order.
    pub fn save(
        &self,
        dir: &Path,
        base_model: &str,
        lineage: Option<&StudentLineage>,
        shared: Option<&LoraSet>,
    ) -> Result<Vec<PathBuf>> {
        let mut out = Vec::with_capacity(self.sets.len());
        for (name, set) in self.names.iter().zip(&self.sets) {
            let folder = dir.join(name);
            let tag = TaskTag { task: name.clone(), tasks: self.names.clone() };
            let extra = [(TASK_FILE, serde_json::to_string_pretty(&tag)?)];
            let summed = shared.map(|s| lora::concat(&[s, set])).transpose()?;
            let whole = summed.as_ref().unwrap_or(set);
            crate::io::peft::save_lora_with_files(whole, &folder, base_model, lineage, &extra)?;
            out.push(folder);
        }
        Ok(out)
    }
}

/// The task a saved adapter folder serves, when it was trained as one of a per-task bank.
pub fn task_of(adapter_dir: &Path) -> Result<Option<TaskTag>> {
    let path = adapter_dir.join(TASK_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| GraftError::io(&path, e))?;
    let tag = serde_json::from_str(&text).map_err(|e| GraftError::model(&path, format!("not a task tag: {e}")))?;
    Ok(Some(tag))
}
