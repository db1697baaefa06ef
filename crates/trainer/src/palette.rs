//! Class colours for masks, overlays, legends and boxes: Pascal VOC's colour map (class 0 black, 1 dark red, 2 dark
//! green, …), so mask PNGs look as VOC's do in any viewer.

/// The colour of class `index` in Pascal VOC's colour map (its bit-interleaving rule, defined for every index).
pub fn color(index: usize) -> [u8; 3] {
    let mut c = [0u8; 3];
    let mut id = index;
    for shift in (0..8).rev() {
        for (ch, v) in c.iter_mut().enumerate() {
            *v |= (((id >> ch) & 1) as u8) << shift;
        }
        id >>= 3;
        if id == 0 {
            break;
        }
    }
    c
}

/// The 256-entry palette (R, G, B triples, 768 bytes) of a palette PNG, entry 255 white (VOC's ignore).
pub fn png_palette() -> Vec<u8> {
    let mut p: Vec<u8> = (0..256).flat_map(color).collect();
    p[255 * 3..].copy_from_slice(&[255, 255, 255]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_colours() {
        // VOC: background, aeroplane, bicycle, bird, boat, …, person (15).
        assert_eq!(color(0), [0, 0, 0]);
        assert_eq!(color(1), [128, 0, 0]);
        assert_eq!(color(2), [0, 128, 0]);
        assert_eq!(color(3), [128, 128, 0]);
        assert_eq!(color(4), [0, 0, 128]);
        assert_eq!(color(15), [192, 128, 128]);
        let p = png_palette();
        assert_eq!(
            (p.len(), &p[3..6], &p[765..]),
            (768, &[128u8, 0, 0][..], &[255u8, 255, 255][..])
        );
    }
}
