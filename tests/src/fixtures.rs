//! Generated datasets for tests: what a new user's folder of images may really hold.

use std::fs;
use std::path::Path;

use image::{ImageBuffer, Luma, Rgb, Rgba};

/// The files [`problem_dataset`] writes into `bad/`, each unreadable for the reason in its name.
pub const BAD_FILES: [&str; 4] = ["zero_bytes.jpg", "truncated.jpg", "text_file.jpg", "huge_header.png"];

/// The files [`problem_dataset`] writes into `good/`, each readable although unusual.
pub const GOOD_FILES: [&str; 5] = [
    "cmyk.jpg",
    "sixteen_bit.png",
    "rgba.png",
    "palette.gif",
    "grayscale.png",
];

/// An ImageFolder root with three classes: `bad/` ([`BAD_FILES`]: a zero-byte file, a JPEG cut inside its
/// headers, a text file named `.jpg`, a PNG whose header claims 30000×30000 pixels), `good/` ([`GOOD_FILES`]: a CMYK
/// JPEG, a 16-bit PNG, an RGBA PNG, a palette GIF, a grayscale PNG) and an empty `empty_class/`.
pub fn problem_dataset(root: &Path) -> std::io::Result<()> {
    let (bad, good) = (root.join("bad"), root.join("good"));
    for d in [&bad, &good, &root.join("empty_class")] {
        fs::create_dir_all(d)?;
    }
    let fail = |e: image::ImageError| std::io::Error::other(e.to_string());

    fs::write(bad.join(BAD_FILES[0]), b"")?;
    let mut jpeg = std::io::Cursor::new(Vec::new());
    ImageBuffer::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 90]))
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .map_err(fail)?;
    fs::write(bad.join(BAD_FILES[1]), &jpeg.get_ref()[..40])?;
    fs::write(bad.join(BAD_FILES[2]), b"this is not an image, just some text\n")?;
    fs::write(bad.join(BAD_FILES[3]), huge_header_png(30000, 30000))?;

    let (w, h) = (24u16, 16u16);
    let cmyk: Vec<u8> = (0..w as usize * h as usize)
        .flat_map(|i| [(i % 200) as u8, 40, 80, 0])
        .collect();
    jpeg_encoder::Encoder::new_file(good.join(GOOD_FILES[0]), 90)
        .and_then(|e| e.encode(&cmyk, w, h, jpeg_encoder::ColorType::Cmyk))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    ImageBuffer::from_fn(20, 10, |x, _| Rgb([65535u16, 0x8080, (x * 3000) as u16]))
        .save(good.join(GOOD_FILES[1]))
        .map_err(fail)?;
    ImageBuffer::from_fn(20, 10, |x, _| Rgba([(x * 10) as u8, 20, 30, 128]))
        .save(good.join(GOOD_FILES[2]))
        .map_err(fail)?;
    // GIF frames are always palette-indexed.
    ImageBuffer::from_fn(20, 10, |x, _| Rgba([if x < 10 { 255u8 } else { 0 }, 0, 255, 255]))
        .save(good.join(GOOD_FILES[3]))
        .map_err(fail)?;
    ImageBuffer::from_fn(20, 10, |x, _| Luma([(x * 12) as u8]))
        .save(good.join(GOOD_FILES[4]))
        .map_err(fail)?;
    Ok(())
}

/// A PNG whose header claims `w×h` RGB8 pixels, with a tiny body; every CRC is correct, so only a size limit
/// refuses it.
pub fn huge_header_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    let mut typed = kind.to_vec();
    typed.extend_from_slice(body);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
}

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
