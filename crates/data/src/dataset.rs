//! A labelled list of image files whose class list travels with it.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::{DataError, Result};

/// One image file and its class index into [`Dataset::classes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// Index into the dataset's class list.
    pub label: usize,
}

/// What a folder scan left out (never an error; reported so that surprises are visible).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Dot-files and dot-folders.
    pub hidden: usize,
    /// Files in a class folder without an image extension (jpg, jpeg, png, gif, bmp, webp).
    pub not_image: usize,
    /// Folders nested inside a class folder (not classes, not descended into).
    pub nested_folders: usize,
    /// Files directly in the root, outside any class folder.
    pub outside_classes: usize,
}

impl Ignored {
    /// Total number of ignored entries.
    pub fn total(&self) -> usize {
        self.hidden + self.not_image + self.nested_folders + self.outside_classes
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} hidden, {} non-image, {} nested folders, {} outside class folders",
            self.hidden, self.not_image, self.nested_folders, self.outside_classes
        )
    }
}

/// A labelled image list; `classes` is the training class list, shared by the validation set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The samples, in a deterministic order (sorted by class, then path, for folders; file order for CSVs).
    pub samples: Vec<Sample>,
    /// Class names; a sample's label indexes this list.
    pub classes: Vec<String>,
    /// Where the dataset came from (folder or CSV file).
    pub source: PathBuf,
    /// Entries a folder scan ignored.
    pub ignored: Ignored,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Number of samples per class, indexed like `classes`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.label] += 1;
        }
        counts
    }

    /// Checks that the dataset can train a classifier: at least two classes.
    pub fn check_trainable(&self) -> Result<()> {
        if self.classes.len() < 2 {
            return Err(DataError::TooFewClasses {
                path: self.source.clone(),
                found: self.classes.len(),
            });
        }
        Ok(())
    }

    /// The same samples relabelled against `classes` (e.g. the training list), matching class names.
    ///
    /// A label not in `classes` is an [`DataError::UnknownClass`] error unless `drop_unknown`, in which case its
    /// samples are dropped; the second value is how many were dropped.
    pub fn relabel(&self, classes: &[String], drop_unknown: bool) -> Result<(Dataset, usize)> {
        let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut samples = Vec::with_capacity(self.samples.len());
        let mut dropped = 0;
        for s in &self.samples {
            let name = &self.classes[s.label];
            match index.get(name.as_str()) {
                Some(&label) => samples.push(Sample {
                    path: s.path.clone(),
                    label,
                }),
                None if drop_unknown => dropped += 1,
                None => {
                    return Err(DataError::UnknownClass {
                        label: name.clone(),
                        path: s.path.clone(),
                    })
                }
            }
        }
        let ds = Dataset {
            samples,
            classes: classes.to_vec(),
            source: self.source.clone(),
            ignored: self.ignored,
        };
        Ok((ds, dropped))
    }
}
