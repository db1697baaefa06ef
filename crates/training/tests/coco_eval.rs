//! COCO box evaluation against pycocotools' numbers, plus small hand-made cases whose answers follow from the
//! definitions.

use training::metrics::coco::{evaluate, recall_points, BoxFormat, CocoDet, CocoGt, CocoStats, DetBox, GtBox};

fn assert_stats(got: &CocoStats, want: &[f64; 12], tol: f64) {
    let g = got.as_array();
    for (i, (g, w)) in g.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "stat {i}: got {g}, pycocotools {w}\n{}",
            got.summary()
        );
    }
}

#[test]
fn matches_pycocotools_on_the_shared_reference() {
    let Some(path) = tests::assets::require("metrics/coco_bbox_eval.json") else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let gt: CocoGt = serde_json::from_value(doc["ground_truth"].clone()).unwrap();
    let dets: Vec<CocoDet> = serde_json::from_value(doc["detections"].clone()).unwrap();
    let s = &doc["stats"];
    let keys = [
        "AP",
        "AP50",
        "AP75",
        "AP_small",
        "AP_medium",
        "AP_large",
        "AR1",
        "AR10",
        "AR100",
        "AR_small",
        "AR_medium",
        "AR_large",
    ];
    let want: Vec<f64> = keys.iter().map(|k| s[*k].as_f64().unwrap()).collect();
    let got = evaluate(&gt, &dets).unwrap();
    assert_stats(&got, &want.try_into().unwrap(), 1e-4);
    // Per-category AP@[.5:.95] (detectron2's per-category table), computed with pycocotools 2.0.11 / numpy 2.4 from
    // the same file as np.mean(p[p > -1]) of precision[:, :, k, 0, -1].
    let per_cat = [
        (1, 0.25871168788822063),
        (2, 0.26955631916586326),
        (5, 0.2857817711486136),
    ];
    assert_eq!(got.per_category.len(), 3);
    for (c, (id, ap)) in got.per_category.iter().zip(per_cat) {
        assert_eq!(c.id, id);
        assert!((c.ap.unwrap() - ap).abs() < 1e-9, "category {id}: {:?} vs {ap}", c.ap);
        assert_eq!(c.pr_curve.len(), 101);
        assert!(
            c.pr_curve.windows(2).all(|w| w[0].1 >= w[1].1),
            "the PR envelope is monotone"
        );
    }
    assert_eq!(got.per_category[0].name, "ant");
}

/// A small case made by hand (non-contiguous categories 4 and 9, image ids out of order, a crowd region, a duplicate
/// detection, tied scores, a detection of an unlisted category 2 and one on an image without ground truth).
const SMALL_CASE: &str = r#"{"ground_truth": {"images": [{"id": 7}, {"id": 3}, {"id": 12}, {"id": 20}], "categories": [{"id": 4, "name": "cat"}, {"id": 9, "name": "dog"}], "annotations": [{"id": 1, "image_id": 3, "category_id": 4, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}, {"id": 2, "image_id": 3, "category_id": 4, "bbox": [50, 50, 60, 40], "area": 2400, "iscrowd": 0}, {"id": 3, "image_id": 3, "category_id": 9, "bbox": [0, 0, 200, 150], "area": 30000, "iscrowd": 1}, {"id": 4, "image_id": 7, "category_id": 9, "bbox": [30, 40, 120, 100], "area": 11000, "iscrowd": 0}, {"id": 5, "image_id": 7, "category_id": 4, "bbox": [5, 5, 30, 30], "area": 900, "iscrowd": 0}, {"id": 6, "image_id": 12, "category_id": 9, "bbox": [100, 100, 50, 50], "area": 2500, "iscrowd": 0}, {"id": 7, "image_id": 12, "category_id": 9, "bbox": [110, 105, 50, 50], "area": 2500, "iscrowd": 0}]}, "detections": [{"image_id": 3, "category_id": 4, "bbox": [11, 10, 20, 21], "score": 0.9}, {"image_id": 3, "category_id": 4, "bbox": [52, 48, 58, 44], "score": 0.6}, {"image_id": 3, "category_id": 4, "bbox": [120, 120, 30, 30], "score": 0.6}, {"image_id": 3, "category_id": 9, "bbox": [20, 20, 50, 50], "score": 0.95}, {"image_id": 3, "category_id": 9, "bbox": [150, 100, 100, 100], "score": 0.5}, {"image_id": 7, "category_id": 9, "bbox": [35, 45, 110, 100], "score": 0.8}, {"image_id": 7, "category_id": 9, "bbox": [30, 40, 120, 100], "score": 0.3}, {"image_id": 7, "category_id": 4, "bbox": [0, 0, 30, 30], "score": 0.6}, {"image_id": 12, "category_id": 9, "bbox": [104, 102, 50, 50], "score": 0.7}, {"image_id": 12, "category_id": 9, "bbox": [104, 102, 50, 50], "score": 0.7}, {"image_id": 20, "category_id": 4, "bbox": [1, 1, 8, 8], "score": 0.65}, {"image_id": 20, "category_id": 2, "bbox": [1, 1, 8, 8], "score": 0.99}]}"#;

#[test]
fn matches_pycocotools_on_a_small_tricky_case() {
    let doc: serde_json::Value = serde_json::from_str(SMALL_CASE).unwrap();
    let gt = CocoGt::from_json(&doc["ground_truth"].to_string()).unwrap();
    let dets = CocoDet::from_json(&doc["detections"].to_string()).unwrap();
    let got = evaluate(&gt, &dets).unwrap();
    // Printed by pycocotools 2.0.11 (numpy 2.4.6): COCOeval(gt, gt.loadRes(dets), 'bbox').stats.
    let want = [
        0.5419801980198018,
        0.8782178217821781,
        0.6089108910891088,
        0.4287128712871287,
        0.6752475247524753,
        0.8,
        0.36666666666666664,
        0.6333333333333334,
        0.6333333333333334,
        0.45,
        0.675,
        1.0,
    ];
    assert_stats(&got, &want, 1e-12);
    // Per-category AP@[.5:.95] and AP50 from the same pycocotools run.
    let cat = &got.per_category[0];
    assert_eq!((cat.id, cat.name.as_str()), (4, "cat"));
    assert!((cat.ap.unwrap() - 0.46376237623762373).abs() < 1e-12);
    assert!((cat.ap50.unwrap() - 0.7564356435643562).abs() < 1e-12);
    // pycocotools' precision[0, ::10, k=0, 0, -1]: 1 (minus an epsilon) up to recall .3, 2/3 to .6, then 3/5.
    let sampled: Vec<f64> = cat.pr_curve.iter().step_by(10).map(|p| p.1).collect();
    let want_pr = [1.0, 1.0, 1.0, 1.0, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 0.6, 0.6, 0.6, 0.6];
    for (g, w) in sampled.iter().zip(want_pr) {
        assert!((g - w).abs() < 1e-12, "{sampled:?}");
    }
    assert_eq!(cat.pr_curve[30].0, recall_points()[30]);
    let dog = &got.per_category[1];
    assert!((dog.ap.unwrap() - 0.6201980198019802).abs() < 1e-12);
    assert_eq!(dog.ap50, Some(1.0));
    assert_eq!((dog.num_gt, cat.num_gt), (3, 3), "crowd regions are not counted");
}

/// pycocotools' precision is tp / (tp + fp + ε), so a perfect precision is 1 − 2⁻⁵² rather than 1.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn gt_box(category_id: u64, bbox: [f64; 4]) -> GtBox {
    GtBox {
        category_id,
        bbox,
        iscrowd: false,
    }
}

fn det(category_id: u64, bbox: [f64; 4], score: f64) -> DetBox {
    DetBox {
        category_id,
        bbox,
        score,
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class{i}")).collect()
}

#[test]
fn perfect_detections_score_one() {
    // Objects of every size (areas 100, 2500, 20000 px²); boxes in xyxy.
    let boxes = vec![
        vec![gt_box(0, [0.0, 0.0, 10.0, 10.0]), gt_box(1, [20.0, 20.0, 70.0, 70.0])],
        vec![gt_box(1, [0.0, 0.0, 200.0, 100.0])],
        vec![],
    ];
    let gt = CocoGt::from_image_boxes(&boxes, BoxFormat::Xyxy, &names(2));
    let dets: Vec<Vec<DetBox>> = boxes
        .iter()
        .map(|bs| bs.iter().map(|b| det(b.category_id, b.bbox, 0.9)).collect())
        .collect();
    let dets = CocoDet::from_image_boxes(&dets, BoxFormat::Xyxy);
    assert_eq!(dets[1].bbox, [20.0, 20.0, 50.0, 50.0], "xyxy is converted to xywh");
    let got = evaluate(&gt, &dets).unwrap();
    // AR1 is 1 too: no image has two objects of one class.
    assert_stats(&got, &[1.0; 12], 1e-12);
    assert!(got.per_category.iter().all(|c| close(c.ap.unwrap(), 1.0)));
}

#[test]
fn no_detections_score_zero() {
    let gt = CocoGt::from_image_boxes(
        &[
            vec![gt_box(0, [0.0, 0.0, 10.0, 10.0])],
            vec![gt_box(0, [0.0, 0.0, 50.0, 50.0])],
        ],
        BoxFormat::Xywh,
        &names(1),
    );
    let got = evaluate(&gt, &[]).unwrap();
    // There are no large objects: APl and ARl are undefined (-1, as pycocotools reports).
    assert_stats(
        &got,
        &[0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0],
        0.0,
    );
    assert_eq!(got.per_category[0].ap, Some(0.0));
    // Nothing at all to evaluate: every stat is -1.
    let empty = evaluate(&CocoGt::default(), &[]).unwrap();
    assert_eq!(empty.as_array(), [-1.0; 12]);
}

#[test]
fn crowd_regions_do_not_create_false_positives() {
    // Image 0: one object and a crowd region far from it. Three confident detections inside the crowd region,
    // then one on the object with a lower score.
    let mut boxes = vec![vec![
        gt_box(0, [0.0, 0.0, 40.0, 40.0]),
        GtBox {
            category_id: 0,
            bbox: [100.0, 100.0, 200.0, 200.0],
            iscrowd: true,
        },
    ]];
    let dets = CocoDet::from_image_boxes(
        &[vec![
            det(0, [110.0, 110.0, 40.0, 40.0], 0.9),
            det(0, [200.0, 150.0, 40.0, 40.0], 0.8),
            det(0, [150.0, 250.0, 40.0, 40.0], 0.7),
            det(0, [1.0, 0.0, 40.0, 40.0], 0.5),
        ]],
        BoxFormat::Xywh,
    );
    let crowd = evaluate(&CocoGt::from_image_boxes(&boxes, BoxFormat::Xywh, &names(1)), &dets).unwrap();
    // IoU of the matched box = 39·40 / (2·1600 − 1560) = 0.951…, above every threshold: AP = AR = 1.
    assert!((crowd.ap - 1.0).abs() < 1e-12, "{}", crowd.summary());
    assert!((crowd.ar100 - 1.0).abs() < 1e-12);
    assert_eq!(crowd.per_category[0].num_gt, 1);
    // The same region as an ordinary object: two of the three detections are false positives ranked first
    // (IoU of the first with it = 1600/40000 < .5), and the region itself is missed.
    boxes[0][1].iscrowd = false;
    let plain = evaluate(&CocoGt::from_image_boxes(&boxes, BoxFormat::Xywh, &names(1)), &dets).unwrap();
    assert!(plain.ap < 0.5, "{}", plain.summary());
}

#[test]
fn detections_of_classes_absent_from_the_ground_truth() {
    let boxes = vec![vec![gt_box(0, [0.0, 0.0, 40.0, 40.0])]];
    let gt = CocoGt::from_image_boxes(&boxes, BoxFormat::Xywh, &names(2));
    let right = det(0, [0.0, 0.0, 40.0, 40.0], 0.5);
    let base = evaluate(&gt, &CocoDet::from_image_boxes(&[vec![right]], BoxFormat::Xywh)).unwrap();
    // Class 1 is listed but has no ground truth: its detections leave the means alone, its AP is undefined.
    // Class 7 is not listed at all: its detections are not evaluated.
    let with_extra = CocoDet::from_image_boxes(
        &[vec![
            right,
            det(1, [0.0, 0.0, 40.0, 40.0], 0.9),
            det(7, [0.0, 0.0, 40.0, 40.0], 0.95),
        ]],
        BoxFormat::Xywh,
    );
    let got = evaluate(&gt, &with_extra).unwrap();
    assert_eq!(got.as_array(), base.as_array());
    assert!((got.ap - 1.0).abs() < 1e-12);
    let absent = &got.per_category[1];
    assert_eq!((absent.ap, absent.ap50, absent.num_det), (None, None, 1));
    assert!(absent.pr_curve.is_empty());
}

#[test]
fn area_ranges_split_the_objects() {
    // A small (area 100) and a large (area 20000) object of one class; only the large one is detected, plus an
    // unmatched medium-sized false positive, which only counts against the "all" and "medium" ranges (no medium
    // ground truth: medium stays undefined).
    let boxes = vec![vec![
        gt_box(0, [0.0, 0.0, 10.0, 10.0]),
        gt_box(0, [100.0, 100.0, 200.0, 100.0]),
    ]];
    let gt = CocoGt::from_image_boxes(&boxes, BoxFormat::Xywh, &names(1));
    let dets = CocoDet::from_image_boxes(
        &[vec![
            det(0, [100.0, 100.0, 200.0, 100.0], 0.9),
            det(0, [400.0, 400.0, 50.0, 50.0], 0.8),
        ]],
        BoxFormat::Xywh,
    );
    let got = evaluate(&gt, &dets).unwrap();
    assert_eq!((got.ap_small, got.ar_small), (0.0, 0.0));
    assert_eq!((got.ap_medium, got.ar_medium), (-1.0, -1.0));
    assert!(close(got.ap_large, 1.0) && close(got.ar_large, 1.0));
    // All areas: recall 1/2 reached at precision 1, so AP = 51 of 101 recall points at 1 = 51/101.
    assert!((got.ap - 51.0 / 101.0).abs() < 1e-12, "{}", got.summary());
    assert!((got.ar100 - 0.5).abs() < 1e-12);
    // The annotation's own area decides its range, not its box: declare the large box "small".
    let mut gt2 = gt.clone();
    gt2.annotations[1].area = Some(500.0);
    let got2 = evaluate(&gt2, &dets).unwrap();
    assert_eq!(got2.ap_large, -1.0);
    assert!((got2.ar_small - 0.5).abs() < 1e-12);
}

#[test]
fn max_dets_and_score_ties() {
    // Two objects in one image, found by detections at ranks 1 and 2: AR1 = 1/2, AR10 = 1.
    let boxes = vec![vec![
        gt_box(0, [0.0, 0.0, 40.0, 40.0]),
        gt_box(0, [100.0, 0.0, 40.0, 40.0]),
    ]];
    let gt = CocoGt::from_image_boxes(&boxes, BoxFormat::Xywh, &names(1));
    let hit_a = det(0, [0.0, 0.0, 40.0, 40.0], 0.7);
    let hit_b = det(0, [100.0, 0.0, 40.0, 40.0], 0.6);
    let got = evaluate(&gt, &CocoDet::from_image_boxes(&[vec![hit_b, hit_a]], BoxFormat::Xywh)).unwrap();
    assert!((got.ar1 - 0.5).abs() < 1e-12 && (got.ar10 - 1.0).abs() < 1e-12);
    // A false positive tied with a true positive: input order decides (stable sort), as in pycocotools.
    let miss = det(0, [300.0, 300.0, 40.0, 40.0], 0.7);
    let first = evaluate(
        &gt,
        &CocoDet::from_image_boxes(&[vec![miss, hit_a, hit_b]], BoxFormat::Xywh),
    )
    .unwrap();
    let second = evaluate(
        &gt,
        &CocoDet::from_image_boxes(&[vec![hit_a, miss, hit_b]], BoxFormat::Xywh),
    )
    .unwrap();
    // miss first: precision 0, 1/2, 2/3 → envelope 2/3 everywhere → AP = 2/3 (to within numpy's epsilon).
    assert!((first.ap - 2.0 / 3.0).abs() < 1e-12, "{}", first.summary());
    // hit first: precision 1 up to recall 1/2, then 2/3 → (51 + 50·2/3)/101.
    assert!(
        (second.ap - (51.0 + 100.0 / 3.0) / 101.0).abs() < 1e-12,
        "{}",
        second.summary()
    );
}

#[test]
fn bad_input_is_an_error() {
    let gt = CocoGt::from_image_boxes(&[vec![gt_box(0, [0.0, 0.0, 40.0, 40.0])]], BoxFormat::Xywh, &names(1));
    let stray = CocoDet {
        image_id: 5,
        category_id: 0,
        bbox: [0.0, 0.0, 1.0, 1.0],
        score: 0.5,
    };
    let err = evaluate(&gt, std::slice::from_ref(&stray)).unwrap_err().to_string();
    assert!(err.contains("image id 5"), "{err}");
    let nan = CocoDet {
        image_id: 0,
        score: f64::NAN,
        ..stray
    };
    assert!(evaluate(&gt, &[nan]).unwrap_err().to_string().contains("NaN score"));
    let err = CocoGt::from_json("{\"images\": 3}").unwrap_err().to_string();
    assert!(err.contains("not a valid COCO JSON"), "{err}");
    let err = CocoGt::load(std::path::Path::new("/nonexistent/instances.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/instances.json"), "{err}");
}

#[test]
fn json_round_trip_and_lenient_fields() {
    // iscrowd as a boolean, area missing (box area used), extra fields ignored.
    let gt = CocoGt::from_json(
        r#"{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 3, "name": "x"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": true,
                             "segmentation": [[0, 0, 10, 0, 10, 10]]},
                            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10]}]}"#,
    )
    .unwrap();
    assert!(gt.annotations[0].iscrowd && !gt.annotations[1].iscrowd);
    assert_eq!(gt.annotations[1].area, None);
    let text = serde_json::to_string(&gt).unwrap();
    assert!(text.contains("\"iscrowd\":1"), "{text}");
    assert_eq!(CocoGt::from_json(&text).unwrap(), gt);
    let dets =
        CocoDet::from_json(r#"[{"image_id": 1, "category_id": 3, "bbox": [50, 50, 10, 10], "score": 1}]"#).unwrap();
    let got = evaluate(&gt, &dets).unwrap();
    // The missing area is the box's 100 px²: a small object, found.
    assert!(close(got.ap, 1.0) && close(got.ap_small, 1.0), "{}", got.summary());
    assert_eq!(got.ap_large, -1.0);
}

#[test]
fn matches_pycocotools_on_seeded_random_cases() {
    // Three seeded random cases (tests/data/coco_pycocotools_cases.json, its `about` says how they were made):
    // up to 208 detections, crowds, many tied scores (rounded to 0.1), an unlisted category and an image with more
    // than 100 detections of one category. Expected numbers from pycocotools 2.0.11 as decimal strings.
    let doc: serde_json::Value = serde_json::from_str(include_str!("data/coco_pycocotools_cases.json")).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let parse = |v: &serde_json::Value| v.as_str().map(|s| s.parse::<f64>().unwrap());
    for (n, case) in cases.iter().enumerate() {
        let gt: CocoGt = serde_json::from_value(case["ground_truth"].clone()).unwrap();
        let dets: Vec<CocoDet> = serde_json::from_value(case["detections"].clone()).unwrap();
        let want: Vec<f64> = case["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| parse(v).unwrap())
            .collect();
        let got = evaluate(&gt, &dets).unwrap();
        assert_stats(&got, &want.try_into().unwrap(), 1e-12);
        let per: Vec<Option<f64>> = case["per_category_ap"].as_array().unwrap().iter().map(parse).collect();
        let got_per: Vec<Option<f64>> = got.per_category.iter().map(|c| c.ap).collect();
        assert_eq!(got_per.len(), per.len(), "case {n}");
        for (g, w) in got_per.iter().zip(&per) {
            assert!(
                (g.unwrap() - w.unwrap()).abs() < 1e-12,
                "case {n}: {got_per:?} vs {per:?}"
            );
        }
    }
}
