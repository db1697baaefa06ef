//! Segmentation datasets: layouts, value maps, bad inputs, mask batches, and the real membrane set.

mod common;

use std::fs;
use std::path::Path;

use candle_core::Device;
use data::segment::{open, open_train_val};
use data::transforms::{Pipeline, RandomHorizontalFlip, Resize, ResizeSize};
use data::{DataError, DecodePolicy, Interpolation, Loader, LoaderConfig, SegOptions, Targets, ValueMap};
use image::{GrayImage, Luma, Rgb, RgbImage};

/// A mask whose left `split` columns are `a` and the rest `b`.
fn mask(w: u32, h: u32, split: u32, a: u8, b: u8) -> GrayImage {
    GrayImage::from_fn(w, h, |x, _| Luma([if x < split { a } else { b }]))
}

/// `n` pairs `images/NN.png` + `masks/NN.png` (left half class 0, right half 1, last row ignore) in `dir`.
fn make_set(dir: &Path, n: usize, classes: Option<&str>) {
    fs::create_dir_all(dir.join("images")).unwrap();
    fs::create_dir_all(dir.join("masks")).unwrap();
    for i in 0..n {
        let (w, h) = (16 + i as u32 % 3, 12);
        common::write_image(&dir.join(format!("images/{i:02}.png")), w, h, i as u8);
        let mut m = mask(w, h, w / 2, 0, 1);
        for x in 0..w {
            m.put_pixel(x, h - 1, Luma([255]));
        }
        m.save(dir.join(format!("masks/{i:02}.png"))).unwrap();
    }
    if let Some(c) = classes {
        fs::write(dir.join("classes.txt"), c).unwrap();
    }
}

fn pipeline(h: usize, w: usize, flip: bool) -> Pipeline {
    let mut steps: Vec<Box<dyn data::transforms::ImageTransform>> = vec![Box::new(
        Resize::new(ResizeSize::Exact { h, w }, Interpolation::Bilinear).unwrap(),
    )];
    if flip {
        steps.push(Box::new(RandomHorizontalFlip::default()));
    }
    Pipeline {
        steps,
        mean: [0.5; 3],
        std: [0.5; 3],
        output_hw: (h, w),
    }
}

fn masks_of(b: &data::Batch) -> Vec<u32> {
    match &b.targets {
        Targets::Masks(t) => {
            assert_eq!(t.dtype(), candle_core::DType::U32);
            t.flatten_all().unwrap().to_vec1().unwrap()
        }
        other => panic!("expected masks, got {other:?}"),
    }
}

#[test]
fn folder_layout_pairs_by_stem_and_reads_classes() {
    let dir = tempfile::tempdir().unwrap();
    make_set(dir.path(), 4, Some("background\nroad\n\n"));
    // An image without a mask and a mask without an image are skipped and reported.
    common::write_image(&dir.path().join("images/lonely.jpg"), 8, 8, 1);
    mask(8, 8, 4, 0, 1).save(dir.path().join("masks/orphan.png")).unwrap();
    fs::write(dir.path().join("images/notes.txt"), "x").unwrap();
    let ds = open(dir.path(), &SegOptions::default()).unwrap();
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.classes, vec!["background", "road"]);
    assert_eq!(ds.skipped.len(), 2);
    assert!(ds.skipped.iter().any(|s| s.path.ends_with("lonely.jpg")));
    assert!(ds.skipped.iter().any(|s| s.path.ends_with("orphan.png")));
    assert!(ds.samples.iter().all(|s| s.image.file_stem() == s.mask.file_stem()));
    let m = ds.read_mask(0).unwrap().unwrap();
    assert_eq!(m.get_pixel(0, 0)[0], 0);
    assert_eq!(m.get_pixel(15, 0)[0], 1);
    assert_eq!(m.get_pixel(0, 11)[0], 255);
    ds.check_masks().unwrap();

    // Classes given by the caller win; without classes.txt or names it is one clear error.
    let opts = SegOptions {
        classes: Some(vec!["a".into(), "b".into()]),
        value_map: None,
    };
    assert_eq!(open(dir.path(), &opts).unwrap().classes, vec!["a", "b"]);
    fs::remove_file(dir.path().join("classes.txt")).unwrap();
    let err = open(dir.path(), &SegOptions::default()).unwrap_err();
    assert!(err.to_string().contains("classes.txt"), "{err}");
}

#[test]
fn csv_train_val_and_split() {
    let dir = tempfile::tempdir().unwrap();
    make_set(&dir.path().join("train"), 5, None);
    make_set(&dir.path().join("val"), 2, None);
    fs::write(dir.path().join("classes.txt"), "bg\nfg\n").unwrap();
    let (train, val) = open_train_val(dir.path(), &SegOptions::default()).unwrap();
    assert_eq!((train.len(), val.len()), (5, 2));
    assert_eq!(train.classes, vec!["bg", "fg"], "classes.txt in the parent of train/");

    let (a, b) = train.split(0.4, 7).unwrap();
    assert_eq!((a.len(), b.len()), (3, 2));
    let (a2, b2) = train.split(0.4, 7).unwrap();
    assert_eq!(
        (a.samples.clone(), b.samples.clone()),
        (a2.samples, b2.samples),
        "seeded"
    );
    assert!(b.samples.iter().all(|s| !a.samples.contains(s)));
    assert!(train.split(1.0, 0).is_err());

    let t = dir.path().join("train");
    fs::write(
        t.join("pairs.csv"),
        "image,mask\nimages/00.png,masks/00.png\nimages/01.png,masks/missing.png\nimages/02.png,masks/02.png\n",
    )
    .unwrap();
    let csv = open(&t.join("pairs.csv"), &SegOptions::default()).unwrap();
    assert_eq!(csv.len(), 2);
    assert_eq!(csv.skipped.len(), 1, "a missing mask is a counted skip");
    assert!(csv.skipped[0].reason.contains("line 3"), "{:?}", csv.skipped);
    fs::write(t.join("bad.csv"), "image,mask\n../x.png,masks/00.png\n").unwrap();
    let err = open(&t.join("bad.csv"), &SegOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::PathEscapes { line: 2, .. }), "{err}");
    fs::write(t.join("none.csv"), "image,mask\nimages/00.png,masks/nope.png\n").unwrap();
    let err = open(&t.join("none.csv"), &SegOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Empty { .. }), "{err}");
}

#[test]
fn value_map_maps_trimaps_and_colours() {
    let map: ValueMap = "1=pet, 2=background, 3=ignore".parse().unwrap();
    assert_eq!(map.class_names(), vec!["pet", "background"]);
    for bad in ["", "1", "x=pet", "1=pet,1=cat", "#12345=a", "2="] {
        assert!(bad.parse::<ValueMap>().is_err(), "`{bad}` parsed");
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("images")).unwrap();
    fs::create_dir_all(d.join("masks")).unwrap();
    common::write_image(&d.join("images/a.jpg"), 6, 4, 0);
    GrayImage::from_fn(6, 4, |x, _| Luma([1 + (x % 3) as u8]))
        .save(d.join("masks/a.png"))
        .unwrap();
    let opts = SegOptions {
        classes: None,
        value_map: Some(map),
    };
    let ds = open(d, &opts).unwrap();
    assert_eq!(ds.classes, vec!["pet", "background"]);
    let m = ds.read_mask(0).unwrap().unwrap();
    assert_eq!(
        (0..6).map(|x| m.get_pixel(x, 0)[0]).collect::<Vec<_>>(),
        vec![0, 1, 255, 0, 1, 255]
    );

    // A value the map does not list: an error naming the file and the value.
    GrayImage::from_pixel(6, 4, Luma([7]))
        .save(d.join("masks/a.png"))
        .unwrap();
    let err = ds.read_mask(0).unwrap_err().to_string();
    assert!(err.contains("a.png") && err.contains("value 7"), "{err}");

    // Colour-coded RGB masks need a colour map; without one they are an error.
    RgbImage::from_fn(6, 4, |x, _| Rgb(if x < 3 { [128, 0, 0] } else { [0, 0, 0] }))
        .save(d.join("masks/a.png"))
        .unwrap();
    let plain = open(
        d,
        &SegOptions {
            classes: Some(vec!["void".into(), "road".into()]),
            value_map: None,
        },
    )
    .unwrap();
    let err = plain.read_mask(0).unwrap_err().to_string();
    assert!(err.contains("a.png") && err.contains("RGB mask"), "{err}");
    let coloured = open(
        d,
        &SegOptions {
            classes: None,
            value_map: Some("#000000=void,#800000=road".parse().unwrap()),
        },
    )
    .unwrap();
    let m = coloured.read_mask(0).unwrap().unwrap();
    assert_eq!((m.get_pixel(0, 0)[0], m.get_pixel(5, 0)[0]), (1, 0));
    // A map naming a class outside the given classes is an error.
    let err = open(
        d,
        &SegOptions {
            classes: Some(vec!["a".into()]),
            value_map: Some("1=b".parse().unwrap()),
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("`b`"), "{err}");
}

/// A palette PNG (colour type 3, 8-bit) with the given palette and indices, written by hand (stored deflate).
fn palette_png(w: u32, h: u32, palette: &[[u8; 3]], index: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend_from_slice(body);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
        raw.extend((0..w).map(|x| index(x, y)));
    }
    // zlib stream with one stored block.
    let (mut a, mut b) = (1u32, 0u32);
    for &v in &raw {
        a = (a + v as u32) % 65521;
        b = (b + a) % 65521;
    }
    let mut z = vec![0x78, 0x01, 1];
    z.extend_from_slice(&(raw.len() as u16).to_le_bytes());
    z.extend_from_slice(&(!(raw.len() as u16)).to_le_bytes());
    z.extend_from_slice(&raw);
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"PLTE", &palette.concat());
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn palette_masks_are_class_indices_and_bad_masks_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("images")).unwrap();
    fs::create_dir_all(d.join("masks")).unwrap();
    common::write_image(&d.join("images/a.png"), 5, 3, 0);
    // VOC style: index 0 black, 1 dark red, 255 cream border; colours are irrelevant, the index is the class.
    let mut palette = vec![[0u8, 0, 0]; 256];
    palette[1] = [128, 0, 0];
    palette[2] = [0, 128, 0];
    palette[255] = [224, 224, 192];
    let png = palette_png(5, 3, &palette, |x, y| if y == 2 { 255 } else { (x % 3) as u8 });
    fs::write(d.join("masks/a.png"), png).unwrap();
    fs::write(d.join("classes.txt"), "bg\naeroplane\nbicycle\n").unwrap();
    let ds = open(d, &SegOptions::default()).unwrap();
    let m = ds.read_mask(0).unwrap().unwrap();
    assert_eq!(m.as_raw(), &vec![0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 255, 255, 255, 255, 255]);

    // A value outside the classes (and not 255): an error naming the file and the value.
    fs::write(d.join("classes.txt"), "bg\naeroplane\n").unwrap();
    let two = open(d, &SegOptions::default()).unwrap();
    let err = two.read_mask(0).unwrap_err().to_string();
    assert!(err.contains("a.png") && err.contains("value 2"), "{err}");

    // Through the loader: a mask of another size is an error naming the mask; an undecodable mask is a skip.
    mask(4, 3, 2, 0, 1).save(d.join("masks/a.png")).unwrap();
    let loader = Loader::new(ds.clone(), pipeline(4, 4, false), LoaderConfig::default(), Device::Cpu).unwrap();
    let err = loader.batch(0, &[0]).unwrap_err().to_string();
    assert!(err.contains("a.png") && err.contains("4×3"), "{err}");
    fs::write(d.join("masks/a.png"), b"not a png").unwrap();
    let b = loader.batch(0, &[0]).unwrap();
    assert_eq!((b.indices.len(), b.skipped.len()), (0, 1));
    assert!(b.skipped[0].reason.contains("mask"), "{:?}", b.skipped);
    let strict = Loader::new(
        ds,
        pipeline(4, 4, false),
        LoaderConfig {
            policy: DecodePolicy::Strict,
            ..Default::default()
        },
        Device::Cpu,
    )
    .unwrap();
    assert!(strict.batch(0, &[0]).is_err());
}

#[test]
fn loader_batches_masks_aligned_with_images() {
    let dir = tempfile::tempdir().unwrap();
    make_set(dir.path(), 7, Some("bg\nfg\n"));
    let ds = open(dir.path(), &SegOptions::default()).unwrap();
    let cfg = LoaderConfig {
        batch_size: 3,
        seed: 5,
        ..Default::default()
    };
    let loader = Loader::new(ds.clone(), pipeline(8, 10, true), cfg.clone(), Device::Cpu).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(|b| b.unwrap()).collect();
    assert_eq!(
        batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    for b in &batches {
        let n = b.indices.len();
        assert_eq!(b.images.dims(), &[n, 3, 8, 10]);
        let Targets::Masks(t) = &b.targets else { panic!() };
        assert_eq!(t.dims(), &[n, 8, 10]);
        assert_eq!(b.labels.dims(), &[0]);
        assert_eq!(b.placements.len(), n);
        assert!(b.placements.iter().all(|p| p.original_hw.0 == 12 && p.hw == (8, 10)));
        let m = masks_of(b);
        assert!(m.iter().all(|&v| v <= 1 || v == 255));
        for i in 0..n {
            // Each mask's left half is 0 and right half 1, or mirrored by the flip; the last row is ignore.
            let row = &m[i * 80..i * 80 + 10];
            let flipped = row[0] == 1;
            assert_eq!(row[9], if flipped { 0 } else { 1 });
            assert!(m[i * 80 + 70..i * 80 + 80].iter().all(|&v| v == 255));
        }
    }
    // Same seed and epoch: the same masks; thread count does not matter.
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let again: Vec<_> = one.install(|| loader.epoch(0).map(|b| masks_of(&b.unwrap())).collect());
    assert_eq!(again, batches.iter().map(masks_of).collect::<Vec<_>>());
    // Flips differ across epochs for some sample.
    let e1: Vec<_> = loader.epoch(1).map(|b| b.unwrap()).collect();
    let by_index = |bs: &[data::Batch]| {
        let mut v: Vec<(usize, Vec<u32>)> = bs
            .iter()
            .flat_map(|b| {
                let m = masks_of(b);
                b.indices
                    .iter()
                    .enumerate()
                    .map(move |(k, &i)| (i, m[k * 80..(k + 1) * 80].to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    };
    assert_ne!(by_index(&batches), by_index(&e1));
    // Cache and pre-resize give the same batches.
    let pre = LoaderConfig {
        pre_resize_shorter: Some(10),
        ..cfg.clone()
    };
    let cached = Loader::new(
        ds.clone(),
        pipeline(8, 10, true),
        LoaderConfig {
            cache: true,
            ..pre.clone()
        },
        Device::Cpu,
    )
    .unwrap();
    let uncached = Loader::new(ds, pipeline(8, 10, true), pre, Device::Cpu).unwrap();
    for e in 0..2 {
        let a: Vec<_> = cached.epoch(e).map(|b| masks_of(&b.unwrap())).collect();
        let b: Vec<_> = uncached.epoch(e).map(|b| masks_of(&b.unwrap())).collect();
        assert_eq!(a, b);
    }
}

#[test]
fn a_classification_only_step_is_refused_for_masks() {
    let dir = tempfile::tempdir().unwrap();
    make_set(dir.path(), 2, Some("bg\nfg\n"));
    let ds = open(dir.path(), &SegOptions::default()).unwrap();
    let loader = Loader::new(ds, common::pipeline(8, 8, false), LoaderConfig::default(), Device::Cpu).unwrap();
    let err = loader.batch(0, &[0]).unwrap_err();
    assert!(matches!(err, DataError::Transform { .. }), "{err}");
    assert!(err.to_string().contains("ExactResize"), "{err}");
}

#[test]
fn real_membrane_set() {
    let Some(root) = tests::assets::require("data/membrane") else {
        return;
    };
    let (train, val) = open_train_val(&root, &SegOptions::default()).unwrap();
    assert_eq!((train.len(), val.len()), (24, 6));
    assert_eq!(train.classes, vec!["membrane", "cell"]);
    assert!(train.skipped.is_empty() && val.skipped.is_empty());
    val.check_masks().unwrap();
    let loader = Loader::new(
        val,
        pipeline(64, 64, false),
        LoaderConfig {
            batch_size: 6,
            shuffle: false,
            ..Default::default()
        },
        Device::Cpu,
    )
    .unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.images.dims(), &[6, 3, 64, 64]);
    // Gray images: three equal channels.
    let v = b.images.get(0).unwrap();
    let (r, g) = (common::values(&v.get(0).unwrap()), common::values(&v.get(1).unwrap()));
    assert_eq!(r, g);
    let m = masks_of(&b);
    let cells = m.iter().filter(|&&v| v == 1).count();
    assert!(m.iter().all(|&v| v <= 1));
    assert!(cells > m.len() / 2 && cells < m.len(), "cells {cells}/{}", m.len());
}
