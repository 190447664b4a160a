//! The objective of dense vision heads (detection, segmentation) on composed scenes: each batch
//! of scene indices goes through the backbone's feature pyramid and the head, and the head's
//! task loss is summed (`vision::dense`). The head trains; the backbone trains too when it has a
//! parameter group (fine-tuned, or from scratch with its running statistics as buffers).

use candle_core::{DType, Var};

use crate::models::efficientnet::EfficientNetLite;
use crate::train::step::LossSum;
use crate::train::{Objective, ObjectiveLoss, ParamGroup};
use crate::vision::dense::DenseHead;
use crate::vision::preprocess::Preprocess;
use crate::vision::scenes::Scene;
use crate::vision::Image;
use crate::Result;

/// A dense head on a backbone, over composed scenes.
pub struct DenseObjective<'a> {
    /// The backbone (its trained weights are variables of it).
    pub model: &'a EfficientNetLite,
    /// The neck and task head.
    pub head: &'a DenseHead,
    /// The training scenes.
    pub scenes: &'a [Scene],
    /// Normalisation of the canvases (no resize, no augmentation).
    pub preprocess: Preprocess,
    /// The backbone's trained weights, if any.
    pub backbone: Option<ParamGroup>,
    /// The backbone's running statistics, when training from scratch.
    pub buffers: Vec<(String, Var)>,
    /// Batch norms on batch statistics (from scratch).
    pub batch_stats: bool,
}

impl Objective for DenseObjective<'_> {
    type Batch = Vec<usize>;

    fn param_groups(&self) -> Vec<ParamGroup> {
        let mut groups = vec![ParamGroup::new("head", self.head.vars().to_vec())];
        groups.extend(self.backbone.clone());
        groups
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        self.buffers.clone()
    }

    fn loss(&self, rows: &Vec<usize>, _micro_step: u64) -> Result<ObjectiveLoss> {
        let scenes: Vec<&Scene> = rows.iter().map(|&i| &self.scenes[i]).collect();
        let images: Vec<&Image> = scenes.iter().map(|s| &s.image).collect();
        let x = self.preprocess.batch(&images, None, &self.model.device())?.to_dtype(self.model.dtype())?;
        let out = self.head.run(self.model, &x, self.batch_stats)?;
        let (sum, count) = self.head.loss(&out, &scenes)?;
        let sum = sum.to_dtype(DType::F32)?;
        Ok(ObjectiveLoss { loss: LossSum { sum, count, sink: None }, metrics: Vec::new() })
    }

    fn batch_size(&self, rows: &Vec<usize>) -> usize {
        rows.len()
    }
}
