//! Downloads through hf-hub against a loopback server that answers the Hub's file API
//! (`GET {endpoint}/{repo}/resolve/{revision}/{file}` with ranges, `etag`, `x-repo-commit`, `content-range`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use backbones::hub::{download, download_async, download_many, DownloadOptions};
use backbones::registry::{self, ModelSpec};
use backbones::weights::{cached_path_in, load_tensors, repo_folder};
use rand::{Rng, SeedableRng};
use sha2::Digest;

const COMMIT: &str = "5f0a6c1e2d3b4a59687766554433221100ffeedd";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Serve the file correctly.
    Full,
    /// Announce the full range, send half of it, close the connection.
    CloseEarly,
    /// Answer ranged downloads with half the bytes (consistent `content-length`, fewer bytes than the file has).
    ShortBody,
    /// 404 for everything.
    NotFound,
}

struct Server {
    endpoint: String,
    requests: Arc<AtomicUsize>,
}

fn serve(repo: &str, body: Vec<u8>, etag: String, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let expected_path = format!("/{repo}/resolve/main/model.safetensors");
    let body = Arc::new(body);
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let (body, etag, path) = (body.clone(), etag.clone(), expected_path.clone());
            std::thread::spawn(move || {
                let _ = handle(stream, &body, &etag, &path, mode);
            });
        }
    });
    Server { endpoint, requests }
}

fn handle(mut stream: TcpStream, body: &[u8], etag: &str, expected_path: &str, mode: Mode) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    if mode == Mode::NotFound || path != expected_path {
        let msg = b"Entry not found";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\nx-error-code: EntryNotFound\r\nconnection: close\r\n\r\n",
            msg.len()
        )?;
        stream.write_all(msg)?;
        return Ok(());
    }
    let len = body.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            // hf-hub asks for one byte past the end on the last chunk: clamp like the Hub does.
            let b: usize = if b.is_empty() {
                len - 1
            } else {
                b.parse::<usize>().unwrap().min(len - 1)
            };
            (a, b)
        }
        None => (0, len - 1),
    };
    let chunk = &body[start..=end];
    let is_metadata = start == 0 && end == 0;
    let (status, sent): (&str, &[u8]) = match (mode, is_metadata) {
        (Mode::ShortBody, false) => ("206 Partial Content", &chunk[..chunk.len() / 2]),
        _ if range.is_some() => ("206 Partial Content", chunk),
        _ => ("200 OK", chunk),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\ncontent-range: bytes {start}-{end}/{len}\r\n\
         etag: \"{etag}\"\r\nx-linked-etag: \"{etag}\"\r\nx-repo-commit: {COMMIT}\r\naccept-ranges: bytes\r\n\
         connection: close\r\n\r\n",
        if mode == Mode::CloseEarly {
            chunk.len()
        } else {
            sent.len()
        }
    )?;
    if method == "HEAD" {
        return Ok(());
    }
    if mode == Mode::CloseEarly && !is_metadata {
        stream.write_all(&sent[..sent.len() / 2])?;
        stream.flush()?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    stream.write_all(sent)
}

fn options(server: &Server, cache: &Path) -> DownloadOptions {
    let mut o = DownloadOptions::from_env()
        .with_cache_dir(cache)
        .with_endpoint(server.endpoint.clone());
    o.offline = false;
    o.token = None;
    o
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen()).collect()
}

/// Regular files anywhere under `dir` whose name is `name` (following no links).
fn files_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|f| f == name) {
                out.push(p);
            }
        }
    }
    out
}

fn small_spec(sha256: Option<String>) -> ModelSpec {
    let mut spec = registry::get("resnet18").unwrap();
    spec.hub.sha256 = sha256;
    spec
}

#[test]
fn downloads_the_real_lite0_file_into_the_hf_cache_once() {
    let Some(src) = tests::assets::require("weights/tf_efficientnet_lite0.safetensors") else {
        return;
    };
    let bytes = std::fs::read(&src).unwrap();
    let sha = sha_hex(&bytes);
    let mut spec = registry::get("tf_efficientnet_lite0").unwrap();
    spec.hub.sha256 = Some(sha.clone());
    // The Hub's etag of an LFS file is its sha256.
    let server = serve(&spec.hub.repo, bytes.clone(), sha.clone(), Mode::Full);
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&server, cache.path());

    let path = download(&spec, &opts).unwrap();
    let repo_dir = cache.path().join(repo_folder(&spec.hub.repo));
    assert_eq!(path, repo_dir.join("snapshots").join(COMMIT).join("model.safetensors"));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap().trim(),
        COMMIT
    );
    assert!(repo_dir.join("blobs").join(&sha).is_file());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(cached_path_in(&spec, cache.path()), Some(path.clone()));
    assert!(files_named(cache.path(), "model.safetensors").len() == 1 || cfg!(unix));
    let tensors = load_tensors(&path).unwrap();
    assert!(tensors.contains_key("classifier.weight"));
    let hits = server.requests.load(Ordering::SeqCst);
    assert!(hits >= 2, "metadata plus at least one ranged download, got {hits}");

    // Already cached: no network.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let again = rt.block_on(download_async(&spec, &opts, None)).unwrap();
    assert!(again.was_cached);
    assert_eq!(again.path, path);
    assert_eq!(server.requests.load(Ordering::SeqCst), hits);
}

fn assert_nothing_installed(spec: &ModelSpec, cache: &Path) {
    assert_eq!(cached_path_in(spec, cache), None);
    let repo_dir = cache.join(repo_folder(&spec.hub.repo));
    assert!(!repo_dir.join("snapshots").exists(), "a snapshot was created");
    assert!(!repo_dir.join("refs").exists(), "a ref was created");
}

fn assert_one_line_naming(e: &str, spec: &ModelSpec) {
    eprintln!("error: {e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains(&format!("`{}`", spec.name)), "{e}");
    assert!(
        e.contains(&format!("cargo xtask download-weights {}", spec.name)),
        "{e}"
    );
}

#[test]
fn a_connection_closed_early_is_an_error_and_leaves_no_complete_file() {
    let body = random_bytes(300_000, 1);
    let spec = small_spec(None);
    let etag = "0123456789abcdef0123456789abcdef01234567".to_string();
    let server = serve(&spec.hub.repo, body, etag.clone(), Mode::CloseEarly);
    let cache = tempfile::tempdir().unwrap();
    let e = download(&spec, &options(&server, cache.path()))
        .unwrap_err()
        .to_string();
    assert_one_line_naming(&e, &spec);
    assert_nothing_installed(&spec, cache.path());
    assert!(
        files_named(cache.path(), &etag).is_empty(),
        "a complete-looking blob was left"
    );
}

#[test]
fn a_short_body_is_detected_without_a_known_sha256() {
    let body = random_bytes(200_000, 2);
    let spec = small_spec(None);
    // A git-style (non-sha256) etag: only the byte count can catch this.
    let etag = "89abcdef0123456789abcdef0123456789abcdef".to_string();
    let server = serve(&spec.hub.repo, body, etag.clone(), Mode::ShortBody);
    let cache = tempfile::tempdir().unwrap();
    let e = download(&spec, &options(&server, cache.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("incomplete"), "{e}");
    assert_one_line_naming(&e, &spec);
    assert_nothing_installed(&spec, cache.path());
    assert!(files_named(cache.path(), &etag).is_empty(), "the partial blob was kept");
}

#[test]
fn a_wrong_sha256_is_an_error_and_the_file_is_removed() {
    let body = random_bytes(150_000, 3);
    let wrong = sha_hex(b"something else");
    let spec = small_spec(Some(wrong.clone()));
    let etag = "fedcba9876543210fedcba9876543210fedcba98".to_string();
    let server = serve(&spec.hub.repo, body.clone(), etag.clone(), Mode::Full);
    let cache = tempfile::tempdir().unwrap();
    let e = download(&spec, &options(&server, cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sha256 mismatch") && e.contains(&wrong) && e.contains(&sha_hex(&body)),
        "{e}"
    );
    assert_one_line_naming(&e, &spec);
    assert_nothing_installed(&spec, cache.path());
    assert!(files_named(cache.path(), &etag).is_empty(), "the bad blob was kept");

    // The LFS etag is a sha256 too: a body that does not match it is refused even without a registry sha.
    let spec = small_spec(None);
    let lying_etag = sha_hex(b"not the body");
    let server = serve(&spec.hub.repo, body.clone(), lying_etag, Mode::Full);
    let e = download(&spec, &options(&server, cache.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256 mismatch") && e.contains("etag"), "{e}");
    assert_nothing_installed(&spec, cache.path());

    // Served correctly afterwards, the same cache accepts it.
    let server = serve(&spec.hub.repo, body.clone(), sha_hex(&body), Mode::Full);
    let path = download(&spec, &options(&server, cache.path())).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
}

#[test]
fn a_404_is_a_clear_error() {
    let spec = small_spec(None);
    let server = serve(&spec.hub.repo, vec![1, 2, 3], "x".into(), Mode::NotFound);
    let cache = tempfile::tempdir().unwrap();
    let e = download(&spec, &options(&server, cache.path()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("404") && e.contains(&spec.hub.repo), "{e}");
    assert_one_line_naming(&e, &spec);
    assert_nothing_installed(&spec, cache.path());
}

#[test]
fn offline_refuses_the_network_with_the_command_to_run() {
    let spec = small_spec(None);
    let server = serve(&spec.hub.repo, vec![1, 2, 3], "x".into(), Mode::Full);
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(&server, cache.path());
    opts.offline = true;
    let e = download(&spec, &opts).unwrap_err().to_string();
    assert_one_line_naming(&e, &spec);
    assert!(e.contains("HF_HUB_OFFLINE") && e.contains("--weights FILE"), "{e}");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn an_unreachable_endpoint_names_the_model_and_the_command() {
    // Bind then drop a listener: the port is (almost certainly) closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spec = small_spec(None);
    let cache = tempfile::tempdir().unwrap();
    let opts = DownloadOptions::from_env()
        .with_cache_dir(cache.path())
        .with_endpoint(format!("http://127.0.0.1:{port}"));
    let mut opts = opts;
    opts.offline = false;
    let e = download(&spec, &opts).unwrap_err().to_string();
    assert_one_line_naming(&e, &spec);
}

#[test]
fn download_many_reports_each_model_in_order() {
    let body = random_bytes(120_000, 4);
    let good = small_spec(None);
    let server = serve(&good.hub.repo, body.clone(), sha_hex(&body), Mode::Full);
    let mut missing = registry::get("vgg16").unwrap();
    missing.hub.sha256 = None;
    let cache = tempfile::tempdir().unwrap();
    let opts = options(&server, cache.path());
    let out = download_many(&[good.clone(), missing.clone()], &opts);
    assert_eq!(out.len(), 2);
    let first = out[0].as_ref().unwrap();
    assert!(!first.was_cached);
    assert_eq!(std::fs::read(&first.path).unwrap(), body);
    let e = out[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("`vgg16`") && e.contains("404"), "{e}");
    // Rerun: the cached one needs no network, the failing one fails again.
    let hits = server.requests.load(Ordering::SeqCst);
    let out = download_many(&[good], &opts);
    assert!(out[0].as_ref().unwrap().was_cached);
    assert_eq!(server.requests.load(Ordering::SeqCst), hits);
}
