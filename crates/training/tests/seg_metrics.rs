//! Segmentation metrics (mmsegmentation's `IoUMetric` definitions) against confusion matrices derived by hand.

use candle_core::{Device, Tensor};
use training::metrics::segmentation::{image_miou, image_mious_tensor, ConfusionMatrix, DEFAULT_IGNORE_INDEX};

const TOL: f64 = 1e-12;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < TOL
}

fn close_opt(got: &[Option<f64>], want: &[Option<f64>]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        match (g, w) {
            (Some(g), Some(w)) => assert!(close(*g, *w), "{got:?} vs {want:?}"),
            (None, None) => {}
            _ => panic!("{got:?} vs {want:?}"),
        }
    }
}

// Three classes, ignore index 255. The two ignored pixels carry predictions 0 and 7 (7 is no class: an ignored
// pixel's prediction is not checked).
const TRUTH: [u32; 8] = [0, 0, 0, 1, 1, 2, 255, 255];
const PRED: [u32; 8] = [0, 0, 1, 1, 2, 2, 0, 7];

#[test]
fn hand_computed_three_classes() {
    // Counted pixels: 6. Confusion [truth][pred]:
    //   t0: 2 1 0      TP = [2, 1, 1]
    //   t1: 0 1 1      truth (row sums) = [3, 2, 1]
    //   t2: 0 0 1      predicted (column sums) = [2, 2, 2]
    // IoU   = TP/(truth+pred-TP) = [2/3, 1/3, 1/2]              mIoU = 1.5/3 = 1/2
    // Acc   = TP/truth           = [2/3, 1/2, 1]                mAcc = (13/6)/3 = 13/18
    // Prec  = TP/pred            = [1, 1/2, 1/2]
    // Dice  = 2TP/(truth+pred)   = [4/5, 1/2, 2/3]              mDice = (59/30)/3 = 59/90
    // aAcc  = 4/6 = 2/3;  fwIoU = 3/6·2/3 + 2/6·1/3 + 1/6·1/2 = 19/36
    let mut cm = ConfusionMatrix::with_default_ignore(3);
    cm.update(&PRED, &TRUTH).unwrap();
    assert_eq!(cm.rows(), vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
    assert_eq!(cm.counts(), &[2, 1, 0, 0, 1, 1, 0, 0, 1]);
    assert_eq!(cm.count(0, 1), 1);
    assert_eq!((cm.total(), cm.ignored()), (6, 2));
    let m = cm.metrics();
    close_opt(&m.per_class_iou, &[Some(2.0 / 3.0), Some(1.0 / 3.0), Some(0.5)]);
    assert!(close(m.miou, 0.5), "{}", m.miou);
    close_opt(&m.per_class_accuracy, &[Some(2.0 / 3.0), Some(0.5), Some(1.0)]);
    assert!(close(m.mean_accuracy, 13.0 / 18.0));
    close_opt(&m.per_class_precision, &[Some(1.0), Some(0.5), Some(0.5)]);
    close_opt(&m.per_class_dice, &[Some(0.8), Some(0.5), Some(2.0 / 3.0)]);
    assert!(close(m.mean_dice, 59.0 / 90.0));
    assert!(close(m.pixel_accuracy, 2.0 / 3.0));
    assert!(close(m.fw_iou, 19.0 / 36.0));
    assert_eq!(m.support, vec![3, 2, 1]);
    assert_eq!((m.pixels, m.ignored_pixels), (6, 2));
}

#[test]
fn ignore_index_is_configurable() {
    // With no ignore index, 255 in the truth is out of range: an error naming the value, and nothing counted.
    let mut none = ConfusionMatrix::new(3, None);
    let err = none.update(&PRED, &TRUTH).unwrap_err().to_string();
    assert!(err.contains("255"), "{err}");
    assert_eq!(none.total(), 0);
    // Ignoring class 0 instead: truth 0 pixels are skipped, prediction 0 elsewhere still counts as class 0.
    let mut zero = ConfusionMatrix::new(3, Some(0));
    zero.update(&[1, 0, 2, 2], &[0, 1, 2, 0]).unwrap();
    assert_eq!(zero.rows(), vec![vec![0, 0, 0], vec![1, 0, 0], vec![0, 0, 1]]);
    assert_eq!(zero.ignored(), 2);
    assert_eq!(DEFAULT_IGNORE_INDEX, 255);
    assert_eq!(ConfusionMatrix::with_default_ignore(3).ignore_index(), Some(255));
}

#[test]
fn absent_classes_are_left_out_of_the_means() {
    // The same pixels over 5 classes: classes 3 and 4 appear nowhere, their IoU/Dice/accuracy are None and the
    // means are those of the 3-class case (mmseg's nanmean).
    let mut cm = ConfusionMatrix::with_default_ignore(5);
    cm.update(&PRED, &TRUTH).unwrap();
    let m = cm.metrics();
    assert_eq!(m.per_class_iou[3], None);
    assert_eq!(m.per_class_iou[4], None);
    assert_eq!(m.per_class_dice[4], None);
    assert_eq!(m.per_class_accuracy[3], None);
    assert!(close(m.miou, 0.5));
    assert!(close(m.mean_dice, 59.0 / 90.0));
    assert!(close(m.mean_accuracy, 13.0 / 18.0));
}

#[test]
fn class_only_in_prediction_counts_with_iou_zero() {
    // truth [0, 0], pred [0, 1]: confusion t0 = [1, 1], t1 = [0, 0].
    // IoU0 = 1/(2+1-1) = 1/2, IoU1 = 0/(0+1-0) = 0 (counted) → mIoU = 1/4.
    // Acc1 is undefined (class 1 absent from the truth) → mAcc = Acc0 = 1/2. Dice1 = 0 → mDice = (2/3 + 0)/2.
    let mut cm = ConfusionMatrix::new(2, None);
    cm.update(&[0, 1], &[0, 0]).unwrap();
    let m = cm.metrics();
    close_opt(&m.per_class_iou, &[Some(0.5), Some(0.0)]);
    assert!(close(m.miou, 0.25));
    close_opt(&m.per_class_accuracy, &[Some(0.5), None]);
    assert!(close(m.mean_accuracy, 0.5));
    assert!(close(m.mean_dice, 1.0 / 3.0));
    assert!(close(m.pixel_accuracy, 0.5));
}

#[test]
fn empty_matrix_has_no_defined_class() {
    let m = ConfusionMatrix::with_default_ignore(3).metrics();
    assert!(m.per_class_iou.iter().all(Option::is_none));
    assert_eq!((m.miou, m.pixel_accuracy, m.pixels), (0.0, 0.0, 0));
}

/// A deterministic pseudo-random class map (values 0..4, plus 255 now and then when `ignored`).
fn pseudo_map(seed: u64, len: usize, ignored: bool) -> Vec<u32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let v = (s >> 33) % 11;
            if v == 10 && ignored {
                255
            } else {
                (v % 4) as u32
            }
        })
        .collect()
}

#[test]
fn two_batches_equal_one_batch_of_both() {
    let (p1, t1) = (pseudo_map(1, 300, false), pseudo_map(2, 300, true));
    let (p2, t2) = (pseudo_map(3, 200, false), pseudo_map(4, 200, true));
    let mut split = ConfusionMatrix::with_default_ignore(4);
    split.update(&p1, &t1).unwrap();
    split.update(&p2, &t2).unwrap();
    let mut whole = ConfusionMatrix::with_default_ignore(4);
    whole
        .update(&[p1.clone(), p2.clone()].concat(), &[t1.clone(), t2.clone()].concat())
        .unwrap();
    assert_eq!(split, whole);
    assert_eq!(split.metrics(), whole.metrics());
    // Merging two workers' matrices gives the same counts.
    let mut a = ConfusionMatrix::with_default_ignore(4);
    a.update(&p1, &t1).unwrap();
    let mut b = ConfusionMatrix::with_default_ignore(4);
    b.update(&p2, &t2).unwrap();
    a.merge(&b).unwrap();
    assert_eq!(a, whole);
    // The dataset mIoU is not the mean of the per-image mIoUs.
    let per_image = (image_miou(&p1, &t1, 4, Some(255)).unwrap().unwrap()
        + image_miou(&p2, &t2, 4, Some(255)).unwrap().unwrap())
        / 2.0;
    assert!((per_image - whole.metrics().miou).abs() > 1e-9);
}

#[test]
fn bad_input_is_an_error() {
    let mut cm = ConfusionMatrix::with_default_ignore(3);
    let err = cm.update(&[0, 1], &[0]).unwrap_err().to_string();
    assert!(err.contains("2 pixels") && err.contains("has 1"), "{err}");
    let err = cm.update(&[0, 3], &[0, 1]).unwrap_err().to_string();
    assert!(err.contains("predicted value 3"), "{err}");
    let err = cm.update(&[0, 1], &[0, 4]).unwrap_err().to_string();
    assert!(err.contains("truth value 4"), "{err}");
    assert_eq!(cm.total(), 0, "a failed update counts nothing");
    let err = cm
        .merge(&ConfusionMatrix::with_default_ignore(4))
        .unwrap_err()
        .to_string();
    assert!(err.contains("4-class"), "{err}");
    assert!(cm.merge(&ConfusionMatrix::new(3, None)).is_err());
}

#[test]
fn image_miou_uses_the_classes_of_that_image() {
    // Classes 0 and 1 only (of 4): confusion t0 = [1, 1], t1 = [0, 2]; IoU0 = 1/2, IoU1 = 2/3 → 7/12.
    let got = image_miou(&[0, 1, 1, 1], &[0, 0, 1, 1], 4, Some(255)).unwrap();
    assert!(close(got.unwrap(), 7.0 / 12.0));
    assert_eq!(image_miou(&[1, 2], &[255, 255], 4, Some(255)).unwrap(), None);
    assert!(image_miou(&[9], &[0], 4, Some(255)).is_err());
}

#[test]
fn tensor_entry_point_matches_slices() {
    let dev = Device::Cpu;
    // N×H×W = 2×2×2: image 0 holds the first four pixels of TRUTH/PRED, image 1 the last four.
    let pred = Tensor::from_slice(&PRED, (2, 2, 2), &dev).unwrap();
    let truth = Tensor::from_slice(&TRUTH, (2, 2, 2), &dev).unwrap();
    let mut from_tensor = ConfusionMatrix::with_default_ignore(3);
    from_tensor.update_tensor(&pred, &truth).unwrap();
    let mut from_slices = ConfusionMatrix::with_default_ignore(3);
    from_slices.update(&PRED, &TRUTH).unwrap();
    assert_eq!(from_tensor, from_slices);
    // u8 truth masks are accepted.
    let truth_u8: Vec<u8> = TRUTH.iter().map(|&v| v as u8).collect();
    let truth8 = Tensor::from_slice(&truth_u8, (2, 2, 2), &dev).unwrap();
    let mut from_u8 = ConfusionMatrix::with_default_ignore(3);
    from_u8.update_tensor(&pred, &truth8).unwrap();
    assert_eq!(from_u8, from_slices);
    // Per-image mIoU: image 0 is truth [0,0,0,1] pred [0,0,1,1] → IoU0 2/3, IoU1 1/2 → 7/12;
    // image 1 is truth [1,2,255,255] pred [2,2,·,·] → IoU1 0, IoU2 1/2 → 1/4.
    let per = image_mious_tensor(&pred, &truth, 3, Some(255)).unwrap();
    assert_eq!(per.len(), 2);
    assert!(
        close(per[0].unwrap(), 7.0 / 12.0) && close(per[1].unwrap(), 0.25),
        "{per:?}"
    );
    // Shape and dtype mismatches are errors.
    let flat = Tensor::from_slice(&PRED, 8, &dev).unwrap();
    assert!(from_tensor.update_tensor(&flat, &truth).is_err());
    let float = pred.to_dtype(candle_core::DType::F32).unwrap();
    let err = from_tensor.update_tensor(&float, &truth).unwrap_err().to_string();
    assert!(err.contains("F32"), "{err}");
}
