//! Feature extraction: a frozen backbone's representations of texts (an encoder's pooled
//! embeddings, or a decoder's pooled / last-token hidden states from a chosen layer), and the
//! classification heads trained on top of them.
