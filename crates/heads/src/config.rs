//! The self-describing configuration saved beside a head's weights.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Two classes, one logit, sigmoid (class 1 is the positive class).
    Binary,
    /// One of n classes, n logits, softmax.
    MultiClass,
    /// Any subset of n labels, one sigmoid per label.
    MultiLabel,
}

/// What the head's input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum InputKind {
    /// Globally average-pooled features, N×`features`.
    Pooled {
        /// Feature width.
        features: usize,
    },
    /// A feature map N×C×h×w, flattened in (C, h, w) order (channels-first; Keras' Flatten is (h, w, C)).
    FeatureMap {
        /// Channels.
        channels: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
}

impl InputKind {
    /// Width of the (flattened) input vector.
    pub fn dim(&self) -> usize {
        match *self {
            InputKind::Pooled { features } => features,
            InputKind::FeatureMap {
                channels,
                height,
                width,
            } => channels * height * width,
        }
    }
}

/// Everything needed to rebuild a head and to use it: task, classes, input, architecture, provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// The task.
    pub task: Task,
    /// Class (or label) names in output order; two names for a binary task.
    pub class_names: Vec<String>,
    /// The input the head expects.
    pub input: InputKind,
    /// Hidden layer widths (empty: a linear head).
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden ReLU (0: none).
    #[serde(default)]
    pub dropout: f32,
    /// Backbone architecture the features come from.
    #[serde(default)]
    pub backbone: Option<String>,
    /// Sha256 (hex) of the backbone weights file.
    #[serde(default)]
    pub backbone_sha256: Option<String>,
    /// Preprocessing the backbone expects (the data crate's config, serialised).
    #[serde(default)]
    pub preprocessing: Option<serde_json::Value>,
}

impl HeadConfig {
    /// A linear head on pooled features for `task` over `class_names`.
    pub fn linear(task: Task, class_names: Vec<String>, features: usize) -> Self {
        Self {
            task,
            class_names,
            input: InputKind::Pooled { features },
            hidden: Vec::new(),
            dropout: 0.0,
            backbone: None,
            backbone_sha256: None,
            preprocessing: None,
        }
    }

    /// Number of outputs (logits): 1 for binary, else the number of classes.
    pub fn num_outputs(&self) -> usize {
        match self.task {
            Task::Binary => 1,
            _ => self.class_names.len(),
        }
    }

    /// Check the configuration is usable.
    pub fn validate(&self) -> Result<()> {
        match self.task {
            Task::Binary if self.class_names.len() != 2 => {
                return Err(Error::Config(format!(
                    "a binary head needs 2 class names, got {}",
                    self.class_names.len()
                )))
            }
            Task::MultiClass if self.class_names.len() < 2 => {
                return Err(Error::Config("a multi-class head needs at least 2 classes".into()))
            }
            Task::MultiLabel if self.class_names.is_empty() => {
                return Err(Error::Config("a multi-label head needs at least 1 label".into()))
            }
            _ => {}
        }
        if self.input.dim() == 0 {
            return Err(Error::Config("input width is 0".into()));
        }
        if self.hidden.contains(&0) {
            return Err(Error::Config("a hidden layer has width 0".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("dropout {} is not in [0, 1)", self.dropout)));
        }
        Ok(())
    }
}
