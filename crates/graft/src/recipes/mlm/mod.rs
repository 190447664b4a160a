//! Masked-language modelling of a BERT-family encoder (`graft pretrain-mlm`): domain- or
//! task-adaptive pretraining before embedding, probing or fine-tuning.
//!
//! Load the encoder and its MLM head (the checkpoint's `cls.predictions.*`, or freshly
//! initialised), tokenize the corpus, train the [`MaskedLm`] objective on the trainer (every
//! encoder weight and the head; held-out MLM loss before, during and after; checkpoints, exact
//! resume, `metrics.jsonl`), then write the adapted encoder as a Hugging Face folder
//! (`encoder/` in the run directory) and `summary.json`.

pub mod config;
pub mod corpus;
pub mod export;
pub mod simcse;

pub use config::MlmConfig;

use crate::assets::{resolve_model, ModelSource};
use crate::data::{shuffle, split_train_eval};
use crate::device::{parse_device, parse_dtype};
use crate::models::bert::{BertWeights, MlmHead, SentenceEncoder};
use crate::objectives::masked_lm::{MaskedLm, MaskedTexts};
use crate::objectives::masking::MaskVocab;
use crate::recipes::finetune::open_run_dir;
use crate::train::{Epochs, Event, ParamGroup, RunSummary, Trainer};
use crate::{GraftError, Result};
use serde::Serialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// `summary.json` of a masked-LM run: the trainer's fields (units are masked tokens) and more.
#[derive(Debug, Clone, Serialize)]
pub struct MlmSummary {
    /// Steps, masked tokens trained on, wall time, memory, parameters, held-out MLM loss
    /// before and after.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Held-out share of masked tokens predicted right, before training (absent for a resumed
    /// run, whose base was measured by the interrupted process).
    pub base_eval_accuracy: Option<f64>,
    /// The same after training.
    pub final_eval_accuracy: Option<f64>,
    /// Texts trained on (those with a token to mask).
    pub train_texts: usize,
    /// Held-out texts the MLM loss and accuracy are measured on.
    pub eval_texts: usize,
    /// Head tensors the checkpoint did not have, freshly initialised.
    pub head_initialised: Vec<String>,
    /// Where the adapted encoder (Hugging Face folder) was written.
    pub output: PathBuf,
}

/// The encoder folder of `cfg.model` and the encoder loaded from it, truncating at
/// `data.seq_len`.
fn load_encoder(cfg: &MlmConfig) -> Result<(PathBuf, SentenceEncoder)> {
    let dir = match resolve_model(&cfg.model.name, false)? {
        ModelSource::HfFolder(dir) => dir,
        ModelSource::Gguf(path) => {
            return Err(GraftError::model(
                &path,
                "a GGUF file holds a decoder; masked-language modelling needs a BERT encoder folder \
                 (e.g. model.name = \"all-minilm-l6-v2\")",
            ))
        }
    };
    let enc = SentenceEncoder::from_hf_folder(&dir, &parse_device(&cfg.model.device)?, parse_dtype(&cfg.model.dtype)?)?;
    let max_len = cfg.data.seq_len.min(enc.model().config().max_position_embeddings);
    Ok((dir, enc.with_max_len(max_len)?))
}

/// Token ids of each text.
type TokenIds = Vec<Vec<u32>>;

/// Training and evaluation texts of `cfg` (the eval file, or a held-out share of the train
/// file chosen by the seed), tokenized.
fn load_texts(
    cfg: &MlmConfig,
    enc: &SentenceEncoder,
    vocab: &MaskVocab,
    on_event: &mut dyn FnMut(Event),
) -> Result<(TokenIds, TokenIds)> {
    let (train_path, eval_path) = super::data_build::data_files(&cfg.data, &mut |n| on_event(Event::Note(n)))?;
    let read = |path: &Path| -> Result<corpus::Tokenized> {
        let texts = corpus::read_corpus(path)?;
        corpus::tokenize(enc, vocab, &texts, &format!("the corpus {}", path.display()))
    };
    let train = read(&train_path)?;
    on_event(Event::Note(format!(
        "corpus: {} texts, {} tokens; {} without a token to mask dropped, {} truncated to {} tokens",
        train.ids.len(),
        train.ids.iter().map(Vec::len).sum::<usize>(),
        train.dropped,
        train.truncated,
        enc.max_len()
    )));
    let (train, eval) = match &eval_path {
        Some(path) => (train.ids, read(path)?.ids),
        None => split_train_eval(train.ids, cfg.data.eval_fraction, cfg.train.seed),
    };
    if train.is_empty() || eval.is_empty() {
        return Err(GraftError::Input(
            "the train/eval split left one side empty: add texts to the corpus or set data.eval".into(),
        ));
    }
    Ok((train, eval))
}

/// Text indices `0..n` in batches of `size`, shuffled by `(seed, epoch)`.
fn index_batches(n: usize, size: usize, seed: u64, epoch: Option<u64>) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(epoch) = epoch {
        shuffle(&mut order, seed, epoch);
    }
    order.chunks(size).map(<[usize]>::to_vec).collect()
}

/// Runs the masked-LM training `cfg` describes; with `resume`, continues from the newest good
/// checkpoint in `cfg.output.dir`.
pub fn run(cfg: &MlmConfig, resume: bool, on_event: &mut dyn FnMut(Event)) -> Result<MlmSummary> {
    cfg.validate()?;
    if cfg.simcse.is_some() {
        return Err(GraftError::Input(
            "this config has a `[simcse]` section: run it with `graft pretrain-simcse`".into(),
        ));
    }
    let out = cfg.output.dir.clone();
    let run_dir = open_run_dir(cfg, &out, resume, cfg.train.save_every)?;

    // The encoder, its head, the vocabulary the masking needs, the texts.
    let (source, mut enc) = load_encoder(cfg)?;
    let (device, dtype) = (enc.model().device().clone(), enc.model().dtype());
    let mut head =
        MlmHead::load_or_init(enc.model().config(), &BertWeights::open(&source)?, cfg.train.seed, &device, dtype)?;
    if !head.fresh().is_empty() {
        on_event(Event::Note(format!("MLM head: {} not in the checkpoint, initialised", head.fresh().join(", "))));
    }
    let vocab = MaskVocab::from_tokenizer(enc.hf_tokenizer(), enc.model().config().vocab_size)?;
    let (train, eval) = load_texts(cfg, &enc, &vocab, on_event)?;
    let head_initialised = head.fresh().to_vec();
    let (train_texts, eval_texts) = (train.len(), eval.len());

    // Everything trains: the encoder (word embeddings = the tied decoder) and the head.
    let groups = vec![
        ParamGroup::new("encoder", enc.model_mut().make_trainable(|_| true)?),
        ParamGroup::new("head", head.make_trainable()?),
    ];
    let t = &cfg.train;
    let mut eval_batches = index_batches(eval.len(), t.batch_size, t.seed, None);
    if t.eval_batches > 0 {
        eval_batches.truncate(t.eval_batches);
    }
    let eval_objective = MaskedLm::new(
        enc.model(),
        &head,
        MaskedTexts { ids: eval, vocab: vocab.clone(), spec: cfg.mlm, seed: t.seed, pad_id: enc.pad_id() },
        Vec::new(),
    )?;
    let n_train = train.len();
    let texts_train = MaskedTexts { ids: train, vocab, spec: cfg.mlm, seed: t.seed, pad_id: enc.pad_id() };
    let objective = MaskedLm::new(enc.model(), &head, texts_train, groups)?;
    let mut batches = Epochs::new(|epoch| Ok(index_batches(n_train, t.batch_size, t.seed, Some(epoch))))?;
    let settings = crate::recipes::parts::loop_settings(t, batches.per_epoch());
    let accuracies = RefCell::new(Vec::new());
    let mut evaluate = || {
        let (loss, acc) = eval_objective.evaluate(&eval_batches)?;
        accuracies.borrow_mut().push(acc);
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
        on_event(e)
    };
    let outcome = trainer.run(&objective, &mut batches, &mut events)?;

    // The adapted encoder as a Hugging Face folder, then the summary.
    let output = out.join("encoder");
    export::write_encoder_folder(&enc, Some(&head), &source, &output)?;
    let accuracies = accuracies.into_inner();
    let summary = MlmSummary {
        run: outcome.summary(),
        base_eval_accuracy: accuracies.first().copied().filter(|_| from_step == 0),
        final_eval_accuracy: accuracies.last().copied(),
        train_texts,
        eval_texts,
        head_initialised,
        output,
    };
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?).map_err(|e| GraftError::io(&path, e))?;
    Ok(summary)
}
