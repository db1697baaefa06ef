//! Weights files: the Hugging Face cache layout, explicit paths, safetensors in every float dtype, zip-format
//! PyTorch checkpoints built by hand (with torchvision → timm renaming), and streamed sha256.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use crate::support::max_abs_diff;
use backbones::hub::DownloadOptions;
use backbones::registry;
use backbones::weights::{cached_path_in, file_sha256, load_tensors, load_tensors_as, repo_folder, resolve};
use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use sha2::Digest;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn offline(cache: &Path) -> DownloadOptions {
    let mut o = DownloadOptions::from_env()
        .with_cache_dir(cache)
        .with_endpoint("http://127.0.0.1:9");
    o.offline = true;
    o
}

#[test]
fn hand_made_hf_cache_layout_is_found_and_preferred() {
    let dir = tempfile::tempdir().unwrap();
    let spec = registry::get("resnet18").unwrap();
    assert_eq!(cached_path_in(&spec, dir.path()), None);
    let repo = dir.path().join(repo_folder(&spec.hub.repo));
    assert!(repo.ends_with("models--timm--resnet18.tv_in1k"));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    // A ref without the file is not a cached file.
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    assert_eq!(cached_path_in(&spec, dir.path()), None);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("blobs/abc"), b"weights").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("../../blobs/abc", snap.join("model.safetensors")).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(repo.join("blobs/abc"), snap.join("model.safetensors")).unwrap();
    let found = cached_path_in(&spec, dir.path()).expect("cached file found");
    assert_eq!(found, snap.join("model.safetensors"));
    assert_eq!(std::fs::read(&found).unwrap(), b"weights");
    // Resolution uses the cache before any network (the options are offline).
    assert_eq!(resolve(&spec, None, &offline(dir.path())).unwrap(), found);
    // Python writes refs with a trailing newline sometimes.
    std::fs::write(repo.join("refs/main"), format!("{commit}\n")).unwrap();
    assert_eq!(cached_path_in(&spec, dir.path()), Some(found.clone()));
    // A dangling link (blob removed) is not a cached file.
    #[cfg(unix)]
    {
        std::fs::remove_file(repo.join("blobs/abc")).unwrap();
        assert_eq!(cached_path_in(&spec, dir.path()), None);
    }
}

#[test]
fn offline_without_cache_names_the_model_and_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let spec = registry::get("vgg16").unwrap();
    let e = resolve(&spec, None, &offline(dir.path())).unwrap_err().to_string();
    assert!(e.contains("`vgg16`"), "{e}");
    assert!(
        e.contains("cargo xtask download-weights vgg16") && e.contains("--weights FILE"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn explicit_weights_win_and_missing_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = registry::get("resnet18").unwrap();
    let file = dir.path().join("mine.safetensors");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(resolve(&spec, Some(&file), &offline(dir.path())).unwrap(), file);
    let missing = dir.path().join("nope.pth");
    let e = resolve(&spec, Some(&missing), &offline(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.pth") && !e.contains('\n'), "{e}");
    let e = load_tensors(&missing).unwrap_err().to_string();
    assert!(e.contains("nope.pth") && !e.contains('\n'), "{e}");
    let e = resolve(&spec, Some(dir.path()), &offline(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn garbage_and_legacy_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"this is not a tensor file at all").unwrap();
    let e = load_tensors(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.safetensors") && !e.contains('\n'), "{e}");
    let legacy = dir.path().join("old.pth");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0alegacy-magic").unwrap();
    let e = load_tensors(&legacy).unwrap_err().to_string();
    assert!(e.contains("old.pth") && e.contains("legacy"), "{e}");
}

#[test]
fn safetensors_in_f16_bf16_f32_load_as_the_compute_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let w = random(&[4, 3, 3, 3], 1);
    let b = random(&[4], 2);
    let w_vals: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    for (dtype, tol) in [(DType::F32, 0.0f32), (DType::F16, 1e-3), (DType::BF16, 8e-3)] {
        let path = dir.path().join(format!("w_{dtype:?}.safetensors"));
        let mut m = HashMap::new();
        m.insert("conv.weight".to_string(), w.to_dtype(dtype).unwrap());
        m.insert("conv.bias".to_string(), b.to_dtype(dtype).unwrap());
        candle_core::safetensors::save(&m, &path).unwrap();
        let got = load_tensors(&path).unwrap();
        assert_eq!(got.len(), 2);
        let gw = &got["conv.weight"];
        assert_eq!(gw.dtype(), DType::F32);
        assert_eq!(gw.dims(), &[4, 3, 3, 3]);
        let g: Vec<f32> = gw.flatten_all().unwrap().to_vec1().unwrap();
        let max_err = g.iter().zip(&w_vals).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(max_err <= tol, "{dtype:?}: max error {max_err}");
        let half = load_tensors_as(&path, DType::F16).unwrap();
        assert_eq!(half["conv.bias"].dtype(), DType::F16);
    }
}

#[test]
fn file_sha256_is_streamed_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.bin");
    // Larger than the 1 MiB read buffer, so several reads are hashed.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let bytes: Vec<u8> = (0..(3 << 20) + 17).map(|_| rng.gen()).collect();
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(file_sha256(&p).unwrap(), hex::encode(sha2::Sha256::digest(&bytes)));
    // The FIPS 180-2 test vector.
    std::fs::write(&p, b"abc").unwrap();
    assert_eq!(
        file_sha256(&p).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(file_sha256(&dir.path().join("missing"))
        .unwrap_err()
        .to_string()
        .contains("missing"));
}

/// A minimal pickle writer (protocol 2) for `torch.save`'s zip format.
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        self.0.push(b'J');
        self.0.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn tuple(&mut self, vals: &[usize]) {
        self.0.push(b'(');
        for v in vals {
            self.int(*v);
        }
        self.0.push(b't');
    }
}

/// Write `tensors` (f32 or f16, contiguous) as a zip-format PyTorch checkpoint, optionally under a wrapper key.
fn write_pth(path: &Path, tensors: &[(&str, Tensor)], wrapper: Option<&str>) {
    let mut p = Pickle(vec![0x80, 0x02]);
    if let Some(key) = wrapper {
        p.0.push(b'}');
        p.str(key);
    }
    p.global("collections", "OrderedDict");
    p.0.extend_from_slice(b")R(");
    let mut storages = Vec::new();
    for (i, (name, t)) in tensors.iter().enumerate() {
        let (storage, bytes): (&str, Vec<u8>) = match t.dtype() {
            DType::F32 => (
                "FloatStorage",
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            DType::F16 => (
                "HalfStorage",
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<half::f16>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            other => panic!("test writer: unsupported {other:?}"),
        };
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.0.push(b'(');
        // Persistent id: ('storage', torch.FloatStorage, key, location, numel).
        p.0.push(b'(');
        p.str("storage");
        p.global("torch", storage);
        p.str(&i.to_string());
        p.str("cpu");
        p.int(t.elem_count());
        p.0.extend_from_slice(b"tQ");
        p.int(0);
        p.tuple(t.dims());
        p.tuple(t.stride());
        p.0.push(0x89);
        p.global("collections", "OrderedDict");
        p.0.extend_from_slice(b")R");
        p.0.extend_from_slice(b"tR");
        storages.push(bytes);
    }
    p.0.push(b'u');
    if wrapper.is_some() {
        p.0.push(b's');
    }
    p.0.push(b'.');
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(&p.0).unwrap();
    for (i, bytes) in storages.iter().enumerate() {
        z.start_file(format!("archive/data/{i}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

#[test]
fn pth_checkpoint_loads_with_names_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.pth");
    let conv = random(&[8, 3, 3, 3], 3);
    let fc = random(&[10, 8], 4).to_dtype(DType::F16).unwrap();
    write_pth(
        &path,
        &[("conv1.weight", conv.clone()), ("fc.weight", fc.clone())],
        None,
    );
    let got = load_tensors(&path).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got["conv1.weight"].dims(), &[8, 3, 3, 3]);
    assert_eq!(max_abs_diff(&got["conv1.weight"], &conv), 0.0);
    assert_eq!(got["fc.weight"].dtype(), DType::F32);
    assert_eq!(max_abs_diff(&got["fc.weight"], &fc.to_dtype(DType::F32).unwrap()), 0.0);
    // The same state dict wrapped as {"state_dict": ...} (a training checkpoint).
    let wrapped = dir.path().join("ckpt.pt");
    write_pth(&wrapped, &[("conv1.weight", conv.clone())], Some("state_dict"));
    let got = load_tensors(&wrapped).unwrap();
    assert_eq!(max_abs_diff(&got["conv1.weight"], &conv), 0.0);
}

#[test]
fn torchvision_vgg_pth_is_renamed_to_timm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vgg16_tv.pth");
    // torchvision's layout at reduced width: classifier.0 takes the 7×7 map flattened (channel-major).
    let fc1 = random(&[6, 2 * 49], 5);
    write_pth(
        &path,
        &[
            ("features.0.weight", random(&[2, 3, 3, 3], 6)),
            ("classifier.0.weight", fc1.clone()),
            ("classifier.0.bias", random(&[6], 7)),
            ("classifier.3.weight", random(&[6, 6], 8)),
            ("classifier.3.bias", random(&[6], 9)),
            ("classifier.6.weight", random(&[10, 6], 10)),
            ("classifier.6.bias", random(&[10], 11)),
        ],
        None,
    );
    let got = load_tensors(&path).unwrap();
    let mut names: Vec<&String> = got.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "features.0.weight",
            "head.fc.bias",
            "head.fc.weight",
            "pre_logits.fc1.bias",
            "pre_logits.fc1.weight",
            "pre_logits.fc2.bias",
            "pre_logits.fc2.weight"
        ]
    );
    assert_eq!(got["pre_logits.fc1.weight"].dims(), &[6, 2, 7, 7]);
    assert_eq!(
        max_abs_diff(&got["pre_logits.fc1.weight"].reshape((6, 98)).unwrap(), &fc1),
        0.0
    );
    assert_eq!(got["pre_logits.fc2.weight"].dims(), &[6, 6, 1, 1]);
    assert_eq!(got["head.fc.weight"].dims(), &[10, 6]);
}
