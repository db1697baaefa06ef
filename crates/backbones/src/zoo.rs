//! Construct any supported architecture by name.

use crate::backbone::Backbone;
use crate::error::{Error, Result};
use crate::params::ParamStore;

/// Architectures implemented in code.
pub const ARCHITECTURES: &[&str] = &[];

/// Build the architecture `arch` (timm name) with parameters from `store`, all frozen.
pub fn build(arch: &str, store: &ParamStore) -> Result<Box<dyn Backbone>> {
    let _ = store;
    Err(Error::UnknownModel {
        name: arch.to_string(),
        suggestion: None,
    })
}
