//! A corpus of bad and unusual inputs, generated in a tempdir: each has its documented outcome, never a panic.

mod common;

use std::fs;
use std::path::Path;

use data::decode::{decode_with_policy, DecodePolicy};
use data::{decode_image, inspect, open, DataError, TrainVal};
use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
/// A PNG whose IHDR claims `w×h` RGB8 with a tiny (zlib, empty) body; every CRC is correct.
use tests::fixtures::huge_header_png as bomb_png;

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    common::gradient(w, h, 3)
        .write_to(&mut buf, image::ImageFormat::Jpeg)
        .unwrap();
    buf.into_inner()
}

/// Splices an EXIF APP1 segment (big-endian TIFF, one IFD entry: Orientation = `value`) right after SOI.
fn with_exif_orientation(jpeg: &[u8], value: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&value.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn expect_decode_error(path: &Path) -> String {
    match decode_image(path) {
        Err(DataError::Decode { path: p, reason }) => {
            assert_eq!(p, path);
            let msg = DataError::Decode {
                path: p,
                reason: reason.clone(),
            }
            .to_string();
            assert!(!msg.contains('\n'), "one-line message: {msg}");
            assert!(msg.contains(path.file_name().unwrap().to_str().unwrap()), "{msg}");
            reason
        }
        other => panic!("{}: expected a decode error, got {other:?}", path.display()),
    }
}

#[test]
fn undecodable_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("zero.jpg"), b"").unwrap();
    fs::write(d.join("text.jpg"), b"this is not an image, just some text\n").unwrap();
    let jpeg = jpeg_bytes(64, 48);
    fs::write(d.join("header_only.jpg"), &jpeg[..40]).unwrap();
    fs::write(d.join("bomb.png"), bomb_png(30000, 30000)).unwrap();
    expect_decode_error(&d.join("zero.jpg"));
    expect_decode_error(&d.join("text.jpg"));
    expect_decode_error(&d.join("header_only.jpg"));
    let reason = expect_decode_error(&d.join("bomb.png"));
    assert!(
        reason.to_lowercase().contains("limit"),
        "refused by the limits, before allocation: {reason}"
    );

    // Skip policy: None after a warning; strict: the error.
    assert!(decode_with_policy(&d.join("text.jpg"), DecodePolicy::Skip)
        .unwrap()
        .is_none());
    assert!(decode_with_policy(&d.join("text.jpg"), DecodePolicy::Strict).is_err());
}

#[test]
fn truncated_jpeg_never_panics() {
    // The JPEG decoder is lenient: a JPEG cut after its headers may decode with the missing rows filled in.
    // Documented outcome: either the full-size image or a decode error, never a panic.
    let dir = tempfile::tempdir().unwrap();
    let jpeg = jpeg_bytes(64, 48);
    for cut in [jpeg.len() / 2, jpeg.len() - 10] {
        let path = dir.path().join(format!("cut{cut}.jpg"));
        fs::write(&path, &jpeg[..cut]).unwrap();
        match decode_image(&path) {
            Ok(img) => assert_eq!(img.dimensions(), (64, 48)),
            Err(e) => assert!(e.to_string().contains("cut"), "{e}"),
        }
    }
}

#[test]
fn colour_types_become_rgb8() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ImageBuffer::from_fn(5, 4, |x, _| Luma([(x * 50) as u8]))
        .save(d.join("gray.png"))
        .unwrap();
    ImageBuffer::from_fn(5, 4, |x, _| LumaA([(x * 50) as u8, 0]))
        .save(d.join("graya.png"))
        .unwrap();
    ImageBuffer::from_fn(5, 4, |x, _| Rgba([10 * x as u8, 20, 30, 0]))
        .save(d.join("rgba.png"))
        .unwrap();
    ImageBuffer::from_fn(5, 4, |x, _| Rgb([65535u16, 0x8080, (x * 0x0101 * 60) as u16]))
        .save(d.join("rgb16.png"))
        .unwrap();
    // A PNG with a .jpg name: the format comes from the content.
    fs::copy(d.join("rgba.png"), d.join("really_png.jpg")).unwrap();

    let gray = decode_image(&d.join("gray.png")).unwrap();
    assert_eq!(gray.get_pixel(3, 1).0, [150, 150, 150]);
    let graya = decode_image(&d.join("graya.png")).unwrap();
    assert_eq!(
        graya.get_pixel(2, 0).0,
        [100, 100, 100],
        "alpha dropped, not composited"
    );
    for name in ["rgba.png", "really_png.jpg"] {
        let rgba = decode_image(&d.join(name)).unwrap();
        assert_eq!(
            rgba.get_pixel(4, 3).0,
            [40, 20, 30],
            "{name}: alpha dropped, not composited"
        );
    }
    let rgb16 = decode_image(&d.join("rgb16.png")).unwrap();
    assert_eq!(rgb16.dimensions(), (5, 4));
    assert_eq!(rgb16.get_pixel(1, 0).0, [255, 128, 60]);
}

#[test]
fn cmyk_jpeg_decodes_to_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cmyk.jpg");
    // `image` cannot write CMYK JPEGs; `jpeg-encoder` can (with an Adobe APP14 marker).
    let (w, h) = (24u16, 16u16);
    let pixels: Vec<u8> = (0..w as usize * h as usize).flat_map(|_| [0u8, 0, 0, 0]).collect();
    let encoder = jpeg_encoder::Encoder::new_file(&path, 95).unwrap();
    encoder.encode(&pixels, w, h, jpeg_encoder::ColorType::Cmyk).unwrap();
    let img = decode_image(&path).unwrap();
    assert_eq!(img.dimensions(), (24, 16));
    let p = img.get_pixel(5, 5).0;
    // All four inks at one extreme give a uniform neutral image (white or black by the file's Adobe convention).
    assert!(p[0] == p[1] && p[1] == p[2] && (p[0] < 8 || p[0] > 247), "{p:?}");
}

#[test]
fn exif_orientation_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let plain = jpeg_bytes(40, 20);
    let rotated = with_exif_orientation(&plain, 6);
    fs::write(dir.path().join("plain.jpg"), &plain).unwrap();
    fs::write(dir.path().join("rot.jpg"), &rotated).unwrap();
    assert_eq!(
        decode_image(&dir.path().join("plain.jpg")).unwrap().dimensions(),
        (40, 20)
    );
    assert_eq!(
        decode_image(&dir.path().join("rot.jpg")).unwrap().dimensions(),
        (20, 40)
    );
    fs::write(dir.path().join("flip.jpg"), with_exif_orientation(&plain, 2)).unwrap();
    let flipped = decode_image(&dir.path().join("flip.jpg")).unwrap();
    let unflipped = decode_image(&dir.path().join("plain.jpg")).unwrap();
    assert_eq!(
        flipped.get_pixel(0, 10),
        unflipped.get_pixel(39, 10),
        "orientation 2 mirrors horizontally"
    );
}

#[test]
fn folder_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    common::write_image(&root.join("a/1.png"), 8, 8, 1);
    common::write_image(&root.join("a/2.JPG"), 8, 8, 2);
    common::write_image(&root.join("b/1.bmp"), 8, 8, 3);
    common::write_image(&root.join("b/nested/x.png"), 8, 8, 4);
    fs::write(root.join("b/notes.txt"), "x").unwrap();
    fs::write(root.join("b/.DS_Store"), "x").unwrap();
    fs::create_dir_all(root.join(".git")).unwrap();
    fs::write(root.join("README.md"), "x").unwrap();
    let ds = open(&root).unwrap();
    assert_eq!(ds.classes, vec!["a", "b"]);
    assert_eq!(ds.class_counts(), vec![2, 1]);
    assert_eq!(
        (
            ds.ignored.hidden,
            ds.ignored.not_image,
            ds.ignored.nested_folders,
            ds.ignored.outside_classes
        ),
        (2, 1, 1, 1)
    );

    // An empty class folder (or one with no image file) is an error naming the class.
    fs::create_dir_all(root.join("c_empty")).unwrap();
    fs::write(root.join("c_empty/readme.txt"), "x").unwrap();
    let err = open(&root).unwrap_err();
    assert!(
        matches!(&err, DataError::EmptyClass { class, .. } if class == "c_empty"),
        "{err}"
    );
    assert!(err.to_string().contains("c_empty"));

    // One class: allowed for inspection, refused for training.
    let one = dir.path().join("one");
    common::write_image(&one.join("only/1.png"), 8, 8, 1);
    let ds = open(&one).unwrap();
    assert_eq!(ds.num_classes(), 1);
    assert!(matches!(
        ds.check_trainable(),
        Err(DataError::TooFewClasses { found: 1, .. })
    ));
    let report = inspect(&one).unwrap();
    assert!(!report.is_usable());
    assert!(report.to_string().contains("at least 2 classes"));

    // No class folder at all; a path that does not exist; a file that is not a CSV.
    let flat = dir.path().join("flat");
    common::write_image(&flat.join("1.png"), 8, 8, 1);
    assert!(matches!(open(&flat), Err(DataError::NoClasses(_))));
    assert!(matches!(open(&dir.path().join("nope")), Err(DataError::NotFound(_))));
    assert!(matches!(
        open(&flat.join("1.png")),
        Err(DataError::UnsupportedSource(_))
    ));
}

#[test]
fn csv_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::write_image(&d.join("img/a1.png"), 8, 8, 1);
    common::write_image(&d.join("img/b1.png"), 8, 8, 2);
    common::write_image(&d.join("img/c1.png"), 8, 8, 3);
    common::write_image(&d.join("outside.png"), 8, 8, 4);
    fs::create_dir_all(d.join("sub")).unwrap();
    let write = |name: &str, body: &str| {
        let p = d.join(name);
        fs::write(&p, body).unwrap();
        p
    };
    let good = write(
        "train.csv",
        "filename,label\nimg/b1.png,bee\nimg/a1.png,ant\n./img/a1.png,ant\n",
    );
    let ds = open(&good).unwrap();
    assert_eq!(ds.classes, vec!["ant", "bee"]);
    assert_eq!(ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(), vec![1, 0, 0]);

    let missing = write("missing.csv", "filename,label\nimg/a1.png,ant\nimg/gone.png,ant\n");
    let err = open(&missing).unwrap_err();
    assert!(matches!(&err, DataError::MissingFile { line: 3, .. }), "{err}");
    assert!(
        err.to_string().contains("gone.png") && err.to_string().contains("line 3"),
        "{err}"
    );

    let escape = write("sub/escape.csv", "filename,label\n../outside.png,ant\n");
    let err = open(&escape).unwrap_err();
    assert!(matches!(&err, DataError::PathEscapes { line: 2, .. }), "{err}");
    assert!(err.to_string().contains("../outside.png"), "{err}");
    let abs = d.join("outside.png");
    let absolute = write("absolute.csv", &format!("filename,label\n{},ant\n", abs.display()));
    assert!(matches!(open(&absolute), Err(DataError::PathEscapes { line: 2, .. })));

    let columns = write("columns.csv", "path,class\nimg/a1.png,ant\n");
    let err = open(&columns).unwrap_err();
    assert!(err.to_string().contains("filename"), "{err}");
    let opts = data::CsvOptions {
        path_column: "path".into(),
        label_column: "class".into(),
    };
    assert_eq!(data::open_with(&columns, &opts).unwrap().len(), 1);

    let empty = write("empty.csv", "filename,label\n");
    assert!(matches!(open(&empty), Err(DataError::Csv { .. })));

    // A validation label unseen in training: error naming it, or dropped and counted on request.
    let val = write(
        "val.csv",
        "filename,label\nimg/a1.png,ant\nimg/c1.png,cicada\nimg/b1.png,bee\n",
    );
    let err = TrainVal::open(&good, &val, &Default::default(), false).unwrap_err();
    assert!(
        matches!(&err, DataError::UnknownClass { label, .. } if label == "cicada"),
        "{err}"
    );
    assert!(err.to_string().contains("cicada"));
    let tv = TrainVal::open(&good, &val, &Default::default(), true).unwrap();
    assert_eq!(tv.dropped_val, 1);
    assert_eq!(tv.val.classes, tv.train.classes);
    assert_eq!(tv.val.samples.iter().map(|s| s.label).collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
fn inspect_lists_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    common::write_image(&root.join("a/ok1.png"), 8, 8, 1);
    common::write_image(&root.join("a/ok2.jpg"), 8, 8, 2);
    common::write_image(&root.join("b/ok.png"), 8, 8, 3);
    fs::write(root.join("b/zero.jpg"), b"").unwrap();
    fs::write(root.join("b/bomb.png"), bomb_png(30000, 30000)).unwrap();
    let report = inspect(root).unwrap();
    assert_eq!(report.counts, vec![2, 3]);
    assert_eq!(report.readable, vec![2, 1]);
    assert_eq!(report.unreadable.len(), 2);
    assert!(report.has_unreadable() && report.is_usable());
    assert_eq!(report.imbalance_ratio(), Some(2.0));
    let text = report.to_string();
    assert!(
        text.contains("zero.jpg") && text.contains("bomb.png") && text.contains("unreadable: 2"),
        "{text}"
    );
}
