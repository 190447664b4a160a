//! Readers for the named datasets graft ships recipes for (the raw files come from
//! [`crate::assets`]).

pub mod appstream;
pub mod appstream_classes;
pub mod austen;
pub mod austen_dialogue;
pub mod imagenet_classes;
pub mod task_files;
pub mod tweets;
