//! `graft tokenize`: show how a model's tokenizer splits a text.

use anyhow::Result;
use graft::tokenizer::Tokenizer;
use serde_json::json;

/// Tokenize a text with a model's tokenizer: ids, and the vocabulary entry of each.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  graft tokenize 'Hello, world!'\n  graft tokenize --json --model model.gguf $'<|im_start|>user\\nhi<|im_end|>'"
)]
pub struct Args {
    /// The text to tokenize. Special tokens written in it (e.g. <|im_end|>) are matched.
    pub text: String,
    /// Model: an asset name, a .gguf file or a Hugging Face folder with tokenizer.json.
    #[arg(long, default_value = graft::assets::DEFAULT_MODEL)]
    pub model: String,
    /// Add the special tokens the model asks for around the text (BOS/EOS), if any.
    #[arg(long)]
    pub add_special: bool,
    /// Never download; fail if the model is not already cached.
    #[arg(long)]
    pub offline: bool,
    /// Print exactly one JSON object on stdout: {"ids": [...], "tokens": [...]}.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let source = graft::assets::resolve_model(&args.model, args.offline)?;
    let tokenizer = Tokenizer::from_source(&source)?;
    let (ids, tokens) = tokenizer.encode_with_tokens(&args.text, args.add_special)?;
    if args.json {
        println!("{}", json!({ "ids": ids, "tokens": tokens }));
    } else {
        for (id, token) in ids.iter().zip(&tokens) {
            println!("{id}\t{token}");
        }
        eprintln!("{} tokens", ids.len());
    }
    Ok(())
}
