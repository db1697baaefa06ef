//! Loader determinism, batching and skip/strict behaviour on a generated dataset.

mod common;

use std::fs;
use std::path::Path;

use candle_core::Device;
use data::{open, Batch, DataError, DecodePolicy, Loader, LoaderConfig};

/// 2 classes × `per_class` images of varied sizes, plus `bad` undecodable files in class `b`.
fn make_dataset(root: &Path, per_class: usize, bad: usize) {
    for (c, class) in ["a", "b"].iter().enumerate() {
        for i in 0..per_class {
            let (w, h) = (20 + (i as u32 * 7) % 30, 16 + (i as u32 * 5) % 25);
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            common::write_image(&root.join(format!("{class}/{i:03}.{ext}")), w, h, (c * 50 + i) as u8);
        }
    }
    for i in 0..bad {
        fs::write(root.join(format!("b/bad{i}.jpg")), b"not a jpeg").unwrap();
    }
}

/// One batch as plain values: indices, labels, image values, skipped count.
type Plain = (Vec<usize>, Vec<u32>, Vec<f32>, usize);

fn collect(loader: &Loader, epoch: u64) -> Vec<Plain> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b: Batch = b.unwrap();
            (
                b.indices.clone(),
                b.labels.to_vec1::<u32>().unwrap(),
                common::values(&b.images),
                b.skipped.len(),
            )
        })
        .collect()
}

fn config(batch_size: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        shuffle: true,
        seed: 11,
        ..Default::default()
    }
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(dir.path(), 9, 0);
    let ds = open(dir.path()).unwrap();
    let loader = Loader::new(ds.clone(), common::pipeline(12, 10, true), config(4), Device::Cpu).unwrap();
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let a = one.install(|| collect(&loader, 0));
    let b = two.install(|| collect(&loader, 0));
    let again = collect(&loader, 0);
    assert_eq!(a, b, "1 vs 2 threads");
    assert_eq!(a, again, "same seed and epoch, same batches");

    // Last partial batch kept: 18 samples in batches of 4 -> 4,4,4,4,2.
    assert_eq!(a.iter().map(|x| x.0.len()).collect::<Vec<_>>(), vec![4, 4, 4, 4, 2]);
    let mut all: Vec<usize> = a.iter().flat_map(|x| x.0.clone()).collect();
    all.sort();
    assert_eq!(all, (0..18).collect::<Vec<_>>());

    // Another epoch reshuffles; another seed too; augmentation depends on the epoch.
    let e1 = collect(&loader, 1);
    assert_ne!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        e1.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    let other = Loader::new(
        ds.clone(),
        common::pipeline(12, 10, true),
        LoaderConfig { seed: 12, ..config(4) },
        Device::Cpu,
    )
    .unwrap();
    assert_ne!(loader.order(0), other.order(0));
    let idx = [3usize];
    let b0 = loader.batch(0, &idx).unwrap();
    let b1 = loader.batch(1, &idx).unwrap();
    assert_ne!(
        common::values(&b0.images),
        common::values(&b1.images),
        "per-epoch augmentation RNG"
    );

    // Without shuffling the order is the dataset's.
    let plain = Loader::new(
        ds,
        common::pipeline(12, 10, false),
        LoaderConfig {
            shuffle: false,
            ..config(5)
        },
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(plain.order(3), (0..18).collect::<Vec<_>>());
}

#[test]
fn cache_and_pre_resize_give_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(dir.path(), 5, 0);
    let ds = open(dir.path()).unwrap();
    let base = LoaderConfig {
        pre_resize_shorter: Some(18),
        ..config(3)
    };
    let uncached = Loader::new(ds.clone(), common::pipeline(8, 8, true), base.clone(), Device::Cpu).unwrap();
    let cached = Loader::new(
        ds,
        common::pipeline(8, 8, true),
        LoaderConfig { cache: true, ..base },
        Device::Cpu,
    )
    .unwrap();
    for epoch in 0..2 {
        assert_eq!(collect(&uncached, epoch), collect(&cached, epoch), "epoch {epoch}");
    }
    let img = data::loader::pre_resize(common::gradient(40, 30, 1), 18);
    assert_eq!(img.dimensions(), (24, 18));
    assert_eq!(
        data::loader::pre_resize(common::gradient(10, 30, 1), 18).dimensions(),
        (10, 30),
        "never enlarges"
    );
}

#[test]
fn skip_policy_reports_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(dir.path(), 4, 2);
    let ds = open(dir.path()).unwrap();
    assert_eq!(ds.len(), 10);
    // Sorted order: a/000..003, b/000..003, b/bad0, b/bad1; batches of 5 put both bad files in the second batch.
    let skip = Loader::new(
        ds.clone(),
        common::pipeline(8, 8, false),
        LoaderConfig {
            shuffle: false,
            ..config(5)
        },
        Device::Cpu,
    )
    .unwrap();
    let mut epoch = skip.epoch(0);
    let batches: Vec<Batch> = epoch.by_ref().map(|b| b.unwrap()).collect();
    let kept: usize = batches.iter().map(|b| b.indices.len()).sum();
    assert_eq!(kept, 8);
    assert_eq!(epoch.skipped().len(), 2);
    assert_eq!(batches.iter().map(|b| b.skipped.len()).collect::<Vec<_>>(), vec![0, 2]);
    for b in &batches {
        assert_eq!(b.images.dims()[0], b.indices.len());
        assert_eq!(b.labels.dims(), &[b.indices.len()]);
        for s in &b.skipped {
            assert!(
                s.path.file_name().unwrap().to_str().unwrap().starts_with("bad"),
                "{s:?}"
            );
            assert!(!s.reason.is_empty());
        }
    }

    let strict = Loader::new(
        ds,
        common::pipeline(8, 8, false),
        LoaderConfig {
            shuffle: false,
            policy: DecodePolicy::Strict,
            ..config(4)
        },
        Device::Cpu,
    )
    .unwrap();
    let results: Vec<_> = strict.epoch(0).collect();
    let err = results
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("strict fails on a bad file");
    assert!(matches!(err, DataError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("bad0.jpg"), "{err}");
    assert!(results.last().unwrap().is_err(), "the epoch stops at the error");
}

#[test]
fn all_skipped_batch_is_not_yielded_and_bad_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(dir.path(), 2, 3);
    let mut ds = open(dir.path()).unwrap();
    // Put the 3 bad files first: with batches of 3, the first batch is all bad.
    let (bad, good): (Vec<_>, Vec<_>) = ds
        .samples
        .iter()
        .cloned()
        .partition(|s| s.path.to_string_lossy().contains("bad"));
    ds.samples = bad.into_iter().chain(good).collect();
    let loader = Loader::new(
        ds.clone(),
        common::pipeline(8, 8, false),
        LoaderConfig {
            shuffle: false,
            ..config(3)
        },
        Device::Cpu,
    )
    .unwrap();
    let mut epoch = loader.epoch(0);
    let batches: Vec<Batch> = epoch.by_ref().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.indices.len()).collect::<Vec<_>>(), vec![3, 1]);
    assert_eq!(
        batches[0].skipped.len(),
        3,
        "skips of an all-bad batch are reported with the next batch"
    );
    assert_eq!(epoch.skipped().len(), 3);
    assert_eq!(loader.batch(0, &[0, 1]).unwrap().indices.len(), 0);
    assert!(matches!(
        Loader::new(ds, common::pipeline(8, 8, false), config(0), Device::Cpu),
        Err(DataError::InvalidOption { name: "batch_size", .. })
    ));
}
