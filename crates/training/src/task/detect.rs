//! Object detection as a task: a backbone's multi-scale maps → a [`DetHead`] (FCOS); targets are boxes per image in
//! input pixels; the loss is FCOS's (focal + GIoU + centerness, reported as parts); the score is COCO's
//! AP@[.5:.95] computed as pycocotools does over the whole validation set.

use std::collections::{BTreeMap, HashMap};

use backbones::Backbone;
use candle_core::{DType, Tensor, Var};
use heads::detect::boxes::Xyxy;
use heads::{DetHead, PostProcess};
use rand_chacha::ChaCha8Rng;

use super::{dense_state, load_dense_state, EvalSummary, Evaluator, ReportSection, StepLoss, Task};
use crate::error::Result;
use crate::loss::fcos_loss;
use crate::metrics::coco::{self, BoxFormat, CocoDet, CocoGt, DetBox, GtBox};

/// The objects of one image, in the batch's input pixels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageBoxes {
    /// Boxes `[x0, y0, x1, y1]`.
    pub boxes: Vec<Xyxy>,
    /// Class index of each box.
    pub classes: Vec<usize>,
    /// Crowd regions (COCO `iscrowd`): not trained on, and ignored by the evaluation as pycocotools does.
    pub iscrowd: Vec<bool>,
}

impl ImageBoxes {
    /// The non-crowd objects as `(box, class)` pairs (what the detector trains on).
    pub fn objects(&self) -> Vec<(Xyxy, usize)> {
        self.boxes
            .iter()
            .zip(&self.classes)
            .zip(self.iscrowd.iter().copied().chain(std::iter::repeat(false)))
            .filter(|(_, crowd)| !crowd)
            .map(|((b, c), _)| (*b, *c))
            .collect()
    }
}

/// A backbone and an FCOS head.
#[derive(Clone, Copy)]
pub struct Detect<'a> {
    /// The encoder (frozen or partly trainable).
    pub backbone: &'a dyn Backbone,
    /// The detector.
    pub head: &'a DetHead,
    /// Postprocessing of the validation pass (a low `conf`, as COCO evaluation expects).
    pub post: PostProcess,
}

impl Detect<'_> {
    /// Raw predictions for images `x`.
    pub fn output(&self, x: &Tensor, train: bool) -> Result<heads::DetOutput> {
        let (_, _, h, w) = x.dims4()?;
        let feats = self
            .backbone
            .forward_multiscale(x, train, &self.head.config().out_indices)?;
        Ok(self.head.forward(&feats, (h, w))?)
    }

    /// Detections per image for images `x`, with `post`.
    pub fn predict(&self, x: &Tensor, post: &PostProcess) -> Result<Vec<Vec<heads::Detection>>> {
        let (_, _, h, w) = x.dims4()?;
        let out = self.output(x, false)?;
        Ok(self.head.postprocess(&out, (h, w), post)?)
    }

    fn loss(&self, out: &heads::DetOutput, y: &[ImageBoxes]) -> Result<(Tensor, Vec<(String, f64)>)> {
        let gt: Vec<Vec<(Xyxy, usize)>> = y.iter().map(ImageBoxes::objects).collect();
        let targets = self.head.targets(&out.levels, &gt, out.cls.device())?;
        let (loss, p) = fcos_loss(out, &targets)?;
        Ok((
            loss,
            vec![
                ("cls".into(), p.cls),
                ("box".into(), p.bbox),
                ("centerness".into(), p.ctr),
            ],
        ))
    }
}

impl Task for Detect<'_> {
    type Target = Vec<ImageBoxes>;
    /// The detections of one image after [`Detect::post`].
    type Prediction = Vec<heads::Detection>;

    fn name(&self) -> &'static str {
        "detect"
    }

    fn score_name(&self) -> &'static str {
        "map"
    }

    fn train_step(&self, x: &Tensor, y: &Vec<ImageBoxes>, _rng: &mut ChaCha8Rng) -> Result<StepLoss> {
        let out = self.output(x, true)?;
        let (loss, parts) = self.loss(&out, y)?;
        Ok(StepLoss {
            loss,
            parts,
            correct: 0,
            count: 0,
        })
    }

    fn evaluator(&self) -> Box<dyn Evaluator<Vec<ImageBoxes>> + '_> {
        Box::new(DetEval {
            task: *self,
            gt: Vec::new(),
            dets: Vec::new(),
            loss: 0.0,
            samples: 0,
        })
    }

    fn backbone(&self) -> Option<&dyn Backbone> {
        Some(self.backbone)
    }

    fn head_vars(&self) -> Vec<(String, Var)> {
        self.head.vars()
    }

    fn state(&self) -> Result<HashMap<String, Tensor>> {
        dense_state(self.backbone, self.head.store())
    }

    fn load_state(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        load_dense_state(self.backbone, self.head.store(), state)
    }

    fn predict(&self, x: &Tensor) -> Result<Vec<Vec<heads::Detection>>> {
        Detect::predict(self, x, &self.post)
    }

    fn report_section(&self, summary: &EvalSummary) -> ReportSection {
        ReportSection::per_class(
            "Per-class AP@[.5:.95]",
            "AP",
            "ap",
            &self.head.config().class_names,
            &summary.metrics,
        )
    }
}

struct DetEval<'a> {
    task: Detect<'a>,
    gt: Vec<Vec<GtBox>>,
    dets: Vec<Vec<DetBox>>,
    loss: f64,
    samples: usize,
}

fn f64s(b: &Xyxy) -> [f64; 4] {
    [b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64]
}

impl Evaluator<Vec<ImageBoxes>> for DetEval<'_> {
    fn add(&mut self, x: &Tensor, y: &Vec<ImageBoxes>) -> Result<()> {
        let (_, _, h, w) = x.dims4()?;
        let out = self.task.output(x, false)?;
        let (loss, _) = self.task.loss(&out, y)?;
        let n = x.dim(0)?;
        self.loss += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64 * n as f64;
        self.samples += n;
        let dets = self.task.head.postprocess(&out, (h, w), &self.task.post)?;
        for (img, d) in y.iter().zip(dets) {
            self.gt.push(
                img.boxes
                    .iter()
                    .zip(&img.classes)
                    .enumerate()
                    .map(|(i, (b, c))| GtBox {
                        category_id: *c as u64,
                        bbox: f64s(b),
                        iscrowd: img.iscrowd.get(i).copied().unwrap_or(false),
                    })
                    .collect(),
            );
            self.dets.push(
                d.iter()
                    .map(|d| DetBox {
                        category_id: d.class as u64,
                        bbox: f64s(&d.bbox),
                        score: d.score as f64,
                    })
                    .collect(),
            );
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<EvalSummary> {
        let names = &self.task.head.config().class_names;
        let gt = CocoGt::from_image_boxes(&self.gt, BoxFormat::Xyxy, names);
        let dets = CocoDet::from_image_boxes(&self.dets, BoxFormat::Xyxy);
        let s = coco::evaluate(&gt, &dets)?;
        let mut metrics = BTreeMap::from([
            ("map".to_string(), s.ap),
            ("map50".to_string(), s.ap50),
            ("map75".to_string(), s.ap75),
            ("map_small".to_string(), s.ap_small),
            ("map_medium".to_string(), s.ap_medium),
            ("map_large".to_string(), s.ap_large),
            ("ar1".to_string(), s.ar1),
            ("ar10".to_string(), s.ar10),
            ("ar100".to_string(), s.ar100),
        ]);
        for c in &s.per_category {
            if let Some(ap) = c.ap {
                metrics.insert(format!("ap/{}", c.name), ap);
            }
        }
        Ok(EvalSummary {
            loss: self.loss / self.samples.max(1) as f64,
            accuracy: s.ap50.max(0.0),
            score: s.ap,
            metrics,
        })
    }
}
