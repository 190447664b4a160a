//! Scores of dense vision tasks: detection as mean average precision at an IoU threshold (VOC's
//! all-point interpolated AP, COCO's `AP50` when the threshold is 0.5), segmentation as mean
//! intersection over union per class.

use serde::Serialize;

use crate::vision::scenes::{box_iou, SceneObject};

/// One predicted box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Detection {
    /// Predicted class.
    pub class: usize,
    /// Confidence; detections are ranked by it.
    pub score: f32,
    /// `[x0, y0, x1, y1]` in pixels.
    pub bbox: [f32; 4],
}

/// Detection scores over a test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionReport {
    /// IoU a detection needs with an unmatched true box of its class to count as right.
    pub iou_threshold: f32,
    /// Mean of the per-class APs over the classes with at least one true box.
    pub map: f64,
    /// AP per class (`null` for a class without true boxes).
    pub per_class_ap: Vec<Option<f64>>,
    /// True boxes per class.
    pub per_class_boxes: Vec<usize>,
}

/// Average precision per class at `iou_threshold`: per class, every image's detections ranked
/// by score (ties kept in input order); a detection is a true positive when its best-IoU true
/// box of the same class in its image reaches the threshold and is not matched yet (greedy, as
/// VOC and COCO match), a false positive otherwise; AP is the area under the precision-recall
/// curve with precision made monotone (all-point interpolation).
pub fn detection_report(
    detections: &[Vec<Detection>],
    truth: &[Vec<SceneObject>],
    n_classes: usize,
    iou_threshold: f32,
) -> DetectionReport {
    let mut per_class_ap = Vec::with_capacity(n_classes);
    let mut per_class_boxes = Vec::with_capacity(n_classes);
    for class in 0..n_classes {
        let n_true: usize = truth.iter().map(|t| t.iter().filter(|o| o.class == class).count()).sum();
        per_class_boxes.push(n_true);
        if n_true == 0 {
            per_class_ap.push(None);
            continue;
        }
        let mut ranked: Vec<(usize, &Detection)> = detections
            .iter()
            .enumerate()
            .flat_map(|(img, ds)| ds.iter().filter(|d| d.class == class).map(move |d| (img, d)))
            .collect();
        ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
        let mut matched: Vec<Vec<bool>> = truth.iter().map(|t| vec![false; t.len()]).collect();
        let mut hits = Vec::with_capacity(ranked.len());
        for (img, d) in ranked {
            let best = truth[img]
                .iter()
                .enumerate()
                .filter(|(_, o)| o.class == class)
                .map(|(j, o)| (j, box_iou(&o.bbox, &d.bbox)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let hit = match best {
                Some((j, iou)) if iou >= iou_threshold && !matched[img][j] => {
                    matched[img][j] = true;
                    true
                }
                _ => false,
            };
            hits.push(hit);
        }
        per_class_ap.push(Some(average_precision(&hits, n_true)));
    }
    let scored: Vec<f64> = per_class_ap.iter().flatten().copied().collect();
    let map = if scored.is_empty() { 0.0 } else { scored.iter().sum::<f64>() / scored.len() as f64 };
    DetectionReport { iou_threshold, map, per_class_ap, per_class_boxes }
}

/// All-point interpolated AP of ranked detections (`hits[k]`: whether the k-th is a true
/// positive) against `n_true` true boxes.
pub fn average_precision(hits: &[bool], n_true: usize) -> f64 {
    let mut tp = 0usize;
    let mut points = Vec::with_capacity(hits.len());
    for (k, &hit) in hits.iter().enumerate() {
        tp += usize::from(hit);
        points.push((tp as f64 / n_true as f64, tp as f64 / (k + 1) as f64));
    }
    // Precision made monotone from the right, then summed over the steps in recall.
    let mut ap = 0.0;
    let mut best = 0.0f64;
    let mut prev_recall = points.last().map_or(0.0, |p| p.0);
    for &(recall, precision) in points.iter().rev() {
        ap += (prev_recall - recall) * best;
        best = best.max(precision);
        prev_recall = recall;
    }
    ap + prev_recall * best
}

/// Segmentation scores over a test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentationReport {
    /// Mean IoU over the classes (background included) that occur in the truth or the
    /// prediction.
    pub miou: f64,
    /// Mean IoU over the object classes only (background left out).
    pub miou_objects: f64,
    /// Share of pixels labelled right.
    pub pixel_accuracy: f64,
    /// IoU per label (0 = background, `c + 1` = class `c`); `null` where a label occurs in
    /// neither.
    pub per_label_iou: Vec<Option<f64>>,
}

/// Per-label IoU of predicted masks against true ones (labels below `n_labels`), summed over
/// every pixel of every image before dividing.
pub fn segmentation_report(predicted: &[Vec<u8>], truth: &[Vec<u8>], n_labels: usize) -> SegmentationReport {
    let (mut inter, mut union) = (vec![0u64; n_labels], vec![0u64; n_labels]);
    let (mut right, mut total) = (0u64, 0u64);
    for (p, t) in predicted.iter().zip(truth) {
        for (&a, &b) in p.iter().zip(t) {
            let (a, b) = (a as usize, b as usize);
            total += 1;
            if a == b {
                right += 1;
                inter[a] += 1;
                union[a] += 1;
            } else {
                union[a] += 1;
                union[b] += 1;
            }
        }
    }
    let per_label_iou: Vec<Option<f64>> =
        (0..n_labels).map(|l| (union[l] > 0).then(|| inter[l] as f64 / union[l] as f64)).collect();
    let mean = |from: usize| {
        let v: Vec<f64> = per_label_iou[from.min(n_labels)..].iter().flatten().copied().collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    SegmentationReport {
        miou: mean(0),
        miou_objects: mean(1),
        pixel_accuracy: if total > 0 { right as f64 / total as f64 } else { 0.0 },
        per_label_iou,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(class: usize, bbox: [f32; 4]) -> SceneObject {
        SceneObject { class, bbox }
    }

    fn det(class: usize, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { class, score, bbox }
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranked: hit, miss, hit against 3 true boxes. Precision 1, 1/2, 2/3 at recall 1/3, 1/3,
        // 2/3; made monotone: 1 up to recall 1/3, then 2/3 up to 2/3: AP = 1/3 + 2/9.
        let ap = average_precision(&[true, false, true], 3);
        assert!((ap - (1.0 / 3.0 + 2.0 / 9.0)).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&[true, true], 2), 1.0);
        assert_eq!(average_precision(&[], 2), 0.0);
        assert_eq!(average_precision(&[false, true], 1), 0.5);
    }

    #[test]
    fn detections_match_once_by_class_and_iou() {
        let truth = vec![vec![obj(0, [0.0, 0.0, 10.0, 10.0]), obj(1, [20.0, 20.0, 30.0, 30.0])], vec![]];
        let detections = vec![
            vec![
                det(0, 0.9, [0.0, 0.0, 10.0, 9.0]),    // IoU 0.9: hit
                det(0, 0.8, [0.0, 0.0, 10.0, 10.0]),   // the same box again: a duplicate, miss
                det(1, 0.7, [20.0, 20.0, 30.0, 25.0]), // IoU 0.5: hit at 0.5
            ],
            vec![det(1, 0.95, [0.0, 0.0, 5.0, 5.0])], // an image without boxes: miss, ranked first
        ];
        let r = detection_report(&detections, &truth, 3, 0.5);
        assert_eq!(r.per_class_boxes, [1, 1, 0]);
        assert_eq!(r.per_class_ap, [Some(1.0), Some(0.5), None]);
        assert_eq!(r.map, 0.75);
        let strict = detection_report(&detections, &truth, 3, 0.75);
        assert_eq!(strict.per_class_ap[1], Some(0.0));
    }

    #[test]
    fn iou_per_label_by_hand() {
        let truth = vec![vec![0, 0, 1, 1], vec![2, 2, 0, 0]];
        let predicted = vec![vec![0, 1, 1, 1], vec![2, 0, 0, 0]];
        let r = segmentation_report(&predicted, &truth, 4);
        // Background: 3 shared of 5 pixels in either; 1: 2 of 3; 2: 1 of 2; 3 absent.
        assert_eq!(r.per_label_iou, [Some(0.6), Some(2.0 / 3.0), Some(0.5), None]);
        assert!((r.miou - (0.6 + 2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        assert!((r.miou_objects - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert_eq!(r.pixel_accuracy, 6.0 / 8.0);
    }
}
