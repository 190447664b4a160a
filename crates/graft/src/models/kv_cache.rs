//! Key/value cache for incremental decoding.
//!
//! Each layer's keys and values live in a buffer with room for more positions than are cached
//! (`[batch, kv_heads, capacity, head_dim]`): a decoding step writes its new position in place
//! and attention reads a view of the filled part, so a step costs what it adds, not a copy of
//! everything cached so far. A full buffer is replaced by one of twice the capacity. Keys that
//! carry a gradient graph (a cache used while training) are concatenated instead, so their
//! gradients flow.

use crate::Result;
use candle_core::Tensor;

/// Positions a layer's buffer holds at first, at least (more when the first append is longer).
const MIN_CAPACITY: usize = 256;

/// One layer's buffers and the view of their filled part.
#[derive(Debug, Clone)]
struct LayerCache {
    /// `[batch, kv_heads, capacity, head_dim]` each; `None` after a graph-carrying append.
    buffers: Option<(Tensor, Tensor)>,
    /// The filled part, `[batch, kv_heads, len, head_dim]` each.
    view: (Tensor, Tensor),
}

/// Per-layer attention keys and values of the tokens seen so far, shaped
/// `[batch, kv_heads, seq, head_dim]`.
///
/// A clone shares what is cached so far but not the room after it: the first append to a
/// clone copies its layers into buffers of its own, so continuing a clone never changes the
/// cache it came from (one prompt prefix scored with several continuations).
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    len: usize,
}

impl Clone for KvCache {
    fn clone(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| l.as_ref().map(|l| LayerCache { buffers: None, view: l.view.clone() }))
            .collect();
        Self { layers, len: self.len }
    }
}

impl KvCache {
    /// An empty cache for `n_layers` blocks.
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers], len: 0 }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k`, `v` (`[batch, kv_heads, new, head_dim]`) for `layer` and returns the whole
    /// cached keys and values of that layer.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let old = self.layers[layer].take();
        let entry = if k.track_op() || v.track_op() {
            let view = match old {
                None => (k.clone(), v.clone()),
                Some(LayerCache { view: (pk, pv), .. }) => (Tensor::cat(&[&pk, k], 2)?, Tensor::cat(&[&pv, v], 2)?),
            };
            LayerCache { buffers: None, view }
        } else {
            match old {
                None => Self::placed(None, None, k, v)?,
                Some(LayerCache { buffers, view }) => Self::placed(buffers, Some(view), k, v)?,
            }
        };
        let view = entry.view.clone();
        self.layers[layer] = Some(entry);
        Ok(view)
    }

    /// `k`, `v` written after the cached `view` into `buffers`, or — when there are none, they
    /// are full or of another dtype — into new ones of twice the needed capacity (at least
    /// [`MIN_CAPACITY`]) that start with a copy of `view`; and the view of the filled part.
    fn placed(
        buffers: Option<(Tensor, Tensor)>,
        view: Option<(Tensor, Tensor)>,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<LayerCache> {
        let (at, new) = (view.as_ref().map_or(Ok(0), |(vk, _)| vk.dim(2))?, k.dim(2)?);
        let (kb, vb) = match buffers {
            Some((kb, vb)) if kb.dim(2)? >= at + new && kb.dtype() == k.dtype() => (kb, vb),
            _ => {
                let capacity = (2 * (at + new)).max(MIN_CAPACITY);
                let empty = |t: &Tensor| -> Result<Tensor> {
                    let mut dims = t.dims().to_vec();
                    dims[2] = capacity;
                    Ok(Tensor::zeros(dims, t.dtype(), t.device())?)
                };
                let (kb, vb) = (empty(k)?, empty(v)?);
                if let Some((ok, ov)) = view.filter(|_| at > 0) {
                    kb.slice_set(&ok.contiguous()?, 2, 0)?;
                    vb.slice_set(&ov.contiguous()?, 2, 0)?;
                }
                (kb, vb)
            }
        };
        kb.slice_set(&k.contiguous()?, 2, at)?;
        vb.slice_set(&v.contiguous()?, 2, at)?;
        let view = (kb.narrow(2, 0, at + new)?, vb.narrow(2, 0, at + new)?);
        Ok(LayerCache { buffers: Some((kb, vb)), view })
    }

    /// The cached keys and values of `layer`, `[batch, kv_heads, len, head_dim]` each.
    pub fn layer(&self, layer: usize) -> Option<&(Tensor, Tensor)> {
        self.layers.get(layer).and_then(|l| l.as_ref()).map(|l| &l.view)
    }

    /// Records that `n` more positions were appended to every layer.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// This cache (batch 1) repeated `batch` times along the batch axis: a shared prompt prefix
    /// computed once, then continued by `batch` different suffixes.
    pub fn repeat_batch(&self, batch: usize) -> Result<Self> {
        let mut out = Self::new(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(LayerCache { view: (k, v), .. }) = l {
                out.append(i, &k.repeat((batch, 1, 1, 1))?, &v.repeat((batch, 1, 1, 1))?)?;
            }
        }
        out.len = self.len;
        Ok(out)
    }

    /// Drops everything cached.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// `n` positions of distinct values, `[1, 2, n, 3]`, starting at `from`.
    fn positions(from: usize, n: usize) -> Tensor {
        let v: Vec<f32> = (0..2 * n * 3).map(|i| (from * 1000 + i) as f32).collect();
        Tensor::from_vec(v, (1, 2, n, 3), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn appends_in_place_equal_concatenation_across_growth() {
        let mut cache = KvCache::new(2);
        let mut want: Option<Tensor> = None;
        // A 5-position prompt, then single positions past the first capacity (256).
        for (step, n) in std::iter::once(5).chain(std::iter::repeat_n(1, 300)).enumerate() {
            let k = positions(step, n);
            let v = (&k * -1.0).unwrap();
            let (ck, cv) = cache.append(1, &k, &v).unwrap();
            let w = match want.take() {
                None => k.clone(),
                Some(w) => Tensor::cat(&[&w, &k], 2).unwrap(),
            };
            assert_eq!(values(&ck), values(&w), "step {step}");
            assert_eq!(values(&cv), values(&(&w * -1.0).unwrap()));
            want = Some(w);
        }
        assert_eq!(cache.layer(1).unwrap().0.dims(), [1, 2, 305, 3]);
        assert!(cache.layer(0).is_none());
    }

    #[test]
    fn a_clone_continues_without_changing_the_original() {
        let mut a = KvCache::new(1);
        a.append(0, &positions(0, 4), &positions(0, 4)).unwrap();
        let mut b = a.clone();
        let (ak, _) = a.append(0, &positions(1, 1), &positions(1, 1)).unwrap();
        let (bk, _) = b.append(0, &positions(2, 2), &positions(2, 2)).unwrap();
        assert_eq!(ak.dims(), [1, 2, 5, 3]);
        assert_eq!(bk.dims(), [1, 2, 6, 3]);
        let want_b = Tensor::cat(&[&positions(0, 4), &positions(2, 2)], 2).unwrap();
        assert_eq!(values(&bk), values(&want_b));
        let want_a = Tensor::cat(&[&positions(0, 4), &positions(1, 1)], 2).unwrap();
        assert_eq!(values(&a.layer(0).unwrap().0), values(&want_a), "b's append left a alone");
        let r = a.repeat_batch(3).unwrap();
        assert_eq!(r.layer(0).unwrap().0.dims(), [3, 2, 5, 3]);
    }

    #[test]
    fn keys_that_carry_a_graph_keep_their_gradients() {
        let mut cache = KvCache::new(1);
        let k0 = Var::from_tensor(&positions(0, 2)).unwrap();
        let k1 = Var::from_tensor(&positions(1, 1)).unwrap();
        cache.append(0, k0.as_tensor(), k0.as_tensor()).unwrap();
        let (k, v) = cache.append(0, k1.as_tensor(), k1.as_tensor()).unwrap();
        let grads = (k + v).unwrap().sum_all().unwrap().backward().unwrap();
        for var in [&k0, &k1] {
            let g = values(grads.get(var.as_tensor()).unwrap());
            assert!(g.iter().all(|x| *x == 2.0), "{g:?}");
        }
    }
}
