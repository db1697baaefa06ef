//! Train/validation pairs: from two sources sharing the training class list, or a seeded stratified split.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::csv::CsvOptions;
use crate::dataset::{Dataset, Sample};
use crate::error::{DataError, Result};
use crate::open::open_with;

/// A training set and a validation set labelled with the training class list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainVal {
    /// Training samples; its `classes` is the class list of both sets.
    pub train: Dataset,
    /// Validation samples, labelled against `train.classes`.
    pub val: Dataset,
    /// Validation samples dropped because their label is not a training class.
    pub dropped_val: usize,
}

impl TrainVal {
    /// Opens a training and a validation source (folders or CSVs), see [`TrainVal::from_datasets`].
    pub fn open(train: &Path, val: &Path, csv: &CsvOptions, drop_unknown_val_classes: bool) -> Result<Self> {
        Self::from_datasets(open_with(train, csv)?, open_with(val, csv)?, drop_unknown_val_classes)
    }

    /// Relabels `val` with `train`'s classes; an unknown validation label is an error unless
    /// `drop_unknown_val_classes`, which drops those samples and counts them in `dropped_val`.
    pub fn from_datasets(train: Dataset, val: Dataset, drop_unknown_val_classes: bool) -> Result<Self> {
        let (val, dropped_val) = val.relabel(&train.classes, drop_unknown_val_classes)?;
        Ok(Self {
            train,
            val,
            dropped_val,
        })
    }

    /// Splits one dataset by class: `round(n × val_fraction)` of each class goes to validation, clamped so that a
    /// class with at least 2 samples has at least one in each set (a 1-sample class stays in training).
    ///
    /// The split depends only on `seed` and the dataset's sample order.
    pub fn split(all: Dataset, val_fraction: f64, seed: u64) -> Result<Self> {
        if !(val_fraction > 0.0 && val_fraction < 1.0) {
            return Err(DataError::InvalidOption {
                name: "val_fraction",
                message: format!("{val_fraction} is not strictly between 0 and 1"),
            });
        }
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        seed_bytes[24..].copy_from_slice(b"split\0\0\0");
        let mut rng = ChaCha8Rng::from_seed(seed_bytes);
        let mut by_class: Vec<Vec<&Sample>> = vec![Vec::new(); all.classes.len()];
        for s in &all.samples {
            by_class[s.label].push(s);
        }
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for mut members in by_class {
            members.shuffle(&mut rng);
            let n = members.len();
            let n_val = if n < 2 {
                0
            } else {
                ((n as f64 * val_fraction).round() as usize).clamp(1, n - 1)
            };
            let (v, t) = members.split_at(n_val);
            val.extend(v.iter().map(|s| (*s).clone()));
            train.extend(t.iter().map(|s| (*s).clone()));
        }
        let make = |samples| Dataset {
            samples,
            classes: all.classes.clone(),
            source: all.source.clone(),
            ignored: all.ignored,
        };
        Ok(Self {
            train: make(train),
            val: make(val),
            dropped_val: 0,
        })
    }
}
