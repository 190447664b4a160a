//! Unsupervised SimCSE of a BERT-family encoder (`graft pretrain-simcse`): the masked-LM
//! recipe's config, corpus, run directory and export with the [`Simcse`] objective instead —
//! every encoder weight trains on two dropout views of each text against the batch's other
//! texts; held-out loss, alignment, uniformity and mean pairwise cosine before, during and
//! after; the adapted encoder written as a Hugging Face folder (`encoder/`) without a head.

use super::{export, index_batches, load_encoder, load_texts, MlmConfig};
use crate::objectives::masking::MaskVocab;
pub use crate::objectives::simcse::Geometry;
use crate::objectives::simcse::Simcse;
use crate::recipes::finetune::open_run_dir;
use crate::train::{Epochs, Event, ParamGroup, RunSummary, Trainer};
use crate::{GraftError, Result};
use serde::Serialize;
use std::cell::RefCell;
use std::path::PathBuf;

/// `summary.json` of a SimCSE run: the trainer's fields (units are texts) and more.
#[derive(Debug, Clone, Serialize)]
pub struct SimcseSummary {
    /// Steps, texts trained on, wall time, memory, parameters, held-out SimCSE loss before and
    /// after.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Held-out alignment, uniformity and mean cosine before training (absent for a resumed
    /// run, whose base was measured by the interrupted process).
    pub base_eval_geometry: Option<Geometry>,
    /// The same after training.
    pub final_eval_geometry: Option<Geometry>,
    /// Texts trained on.
    pub train_texts: usize,
    /// Held-out texts the loss and geometry are measured on.
    pub eval_texts: usize,
    /// Where the adapted encoder (Hugging Face folder) was written.
    pub output: PathBuf,
}

/// Runs the SimCSE training `cfg` describes (its `[simcse]` section); with `resume`, continues
/// from the newest good checkpoint in `cfg.output.dir`.
pub fn run(cfg: &MlmConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<SimcseSummary> {
    cfg.validate()?;
    let spec =
        cfg.simcse.ok_or_else(|| GraftError::Input("a SimCSE run needs a `[simcse]` section in its config".into()))?;
    let out = cfg.output.dir.clone();
    let run_dir = open_run_dir(cfg, &out, resume, cfg.train.save_every)?;

    let (source, mut enc) = load_encoder(cfg)?;
    // Texts with no word piece (empty, special tokens only) are dropped as for masked LM.
    let vocab = MaskVocab::from_tokenizer(enc.hf_tokenizer(), enc.model().config().vocab_size)?;
    let (train, eval) = load_texts(cfg, &enc, &vocab, on_event)?;
    let (train_texts, eval_texts) = (train.len(), eval.len());
    let groups = vec![ParamGroup::new("encoder", enc.model_mut().make_trainable(|_| true)?)];

    let t = &cfg.train;
    let mut eval_batches = index_batches(eval.len(), t.batch_size, t.seed, None);
    if t.eval_batches > 0 {
        eval_batches.truncate(t.eval_batches);
    }
    let eval_objective = Simcse::new(&enc, eval, spec, t.seed, Vec::new())?;
    let n_train = train.len();
    let objective = Simcse::new(&enc, train, spec, t.seed, groups)?;
    // A last batch of one text has no negative: batches are whole.
    let mut batches = Epochs::new(|epoch| {
        let mut b = index_batches(n_train, t.batch_size, t.seed, Some(epoch));
        b.retain(|rows| rows.len() >= 2);
        Ok(b)
    })?;
    let settings = crate::recipes::parts::loop_settings(t, batches.per_epoch());
    // The evaluation reports its geometry as a note through the same event sink as the loop.
    let sink = RefCell::new(on_event);
    let geometries = RefCell::new(Vec::new());
    let mut evaluate = || {
        let (loss, g) = eval_objective.evaluate(&eval_batches)?;
        (sink.borrow_mut())(Event::Note(format!(
            "held-out SimCSE loss {loss:.4}, alignment {:.4}, uniformity {:.4}, mean cosine {:.4}",
            g.alignment, g.uniformity, g.mean_cosine
        )));
        geometries.borrow_mut().push(g);
        Ok(crate::train::Evaluation::from(loss))
    };
    let trainer = Trainer {
        settings,
        optimizer: crate::recipes::parts::optimizer_kind(&cfg.train),
        run_dir: Some(run_dir),
        evaluate: Some(&mut evaluate),
    };
    let mut from_step = 0;
    let mut events = |e: Event| {
        if let Event::Start { from_step: s, .. } = e {
            from_step = s;
        }
        (sink.borrow_mut())(e)
    };
    let outcome = trainer.run(&objective, &mut batches, &mut events)?;

    let output = out.join("encoder");
    export::write_encoder_folder(&enc, None, &source, &output)?;
    let geometries = geometries.into_inner();
    let summary = SimcseSummary {
        run: outcome.summary(),
        base_eval_geometry: geometries.first().copied().filter(|_| from_step == 0),
        final_eval_geometry: geometries.last().copied(),
        train_texts,
        eval_texts,
        output,
    };
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?).map_err(|e| GraftError::io(&path, e))?;
    Ok(summary)
}
