//! Environment variables honoured by downloads and cache lookups (one test: it mutates the process environment).

use std::path::PathBuf;

use backbones::hub::{DownloadOptions, DEFAULT_ENDPOINT};
use backbones::weights::hub_cache_dir;

#[test]
fn hf_environment_variables_are_honoured() {
    for k in ["HF_HUB_CACHE", "HF_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_TOKEN"] {
        std::env::remove_var(k);
    }
    std::env::set_var("HOME", "/home/someone");
    assert_eq!(hub_cache_dir(), PathBuf::from("/home/someone/.cache/huggingface/hub"));
    let o = DownloadOptions::from_env();
    assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
    assert!(!o.offline && o.token.is_none());

    // An empty HF_HOME counts as unset (hf-hub alone would take it literally: `hub` in the current folder).
    std::env::set_var("HF_HOME", "");
    assert_eq!(hub_cache_dir(), PathBuf::from("/home/someone/.cache/huggingface/hub"));
    std::env::set_var("HF_HOME", "/data/hf");
    assert_eq!(backbones::weights::hub_cache().path(), &PathBuf::from("/data/hf/hub"));
    assert_eq!(hub_cache_dir(), PathBuf::from("/data/hf/hub"));
    std::env::set_var("HF_HUB_CACHE", "/fast/hub-cache");
    assert_eq!(hub_cache_dir(), PathBuf::from("/fast/hub-cache"));

    std::env::set_var("HF_ENDPOINT", "http://mirror.example:8080/");
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_TOKEN", "hf_secret");
    let o = DownloadOptions::from_env();
    assert_eq!(o.cache_dir, PathBuf::from("/fast/hub-cache"));
    assert_eq!(o.endpoint, "http://mirror.example:8080");
    assert!(o.offline);
    assert_eq!(o.token.as_deref(), Some("hf_secret"));
    std::env::set_var("HF_HUB_OFFLINE", "0");
    assert!(!DownloadOptions::from_env().offline);
}
