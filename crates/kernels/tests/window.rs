//! The one window geometry: output sizes, TF "SAME" padding and the errors of windows that do not fit.

use kernels::{Padding, Window};

#[test]
fn output_size_is_floor_and_padding_is_kept_per_side() {
    let w = Window::new("test", 9, 7, 3, 2, [1, 0, 2, 1]).unwrap();
    assert_eq!((w.h(), w.w(), w.kernel(), w.stride(), w.dilation()), (9, 7, 3, 2, 1));
    assert_eq!(w.pad(), [1, 0, 2, 1]);
    // (9 + 1 − 3) / 2 + 1 = 4, (7 + 3 − 3) / 2 + 1 = 4.
    assert_eq!((w.ho(), w.wo()), (4, 4));
    assert_eq!((w.in_len(), w.out_len()), (63, 16));
    assert!(!w.is_identity());
    assert!(Window::new("test", 5, 5, 1, 1, [0; 4]).unwrap().is_identity());
    assert!(!Window::new("test", 5, 5, 1, 1, [0, 0, 0, 1]).unwrap().is_identity());
}

#[test]
fn dilation_widens_the_kernel() {
    // A 3×3 kernel with dilation 2 spans 5 cells: (10 − 5) / 1 + 1 = 6.
    let w = Window::dilated("test", 10, 10, 3, 1, 2, [0; 4]).unwrap();
    assert_eq!((w.ho(), w.wo(), w.dilation()), (6, 6, 2));
    assert!(Window::dilated("test", 4, 4, 3, 1, 2, [0; 4]).is_err());
}

#[test]
fn tf_same_padding_gives_ceil_output() {
    for (n, k, s) in [(224, 3, 2), (97, 5, 2), (13, 3, 1), (7, 5, 2), (8, 3, 2)] {
        let w = Window::padded("test", n, n + 1, k, s, Padding::TfSame).unwrap();
        assert_eq!(w.ho(), n.div_ceil(s), "n={n} k={k} s={s}");
        assert_eq!(w.wo(), (n + 1).div_ceil(s), "n={n} k={k} s={s}");
        let [t, b, l, r] = w.pad();
        assert!(b == t || b == t + 1, "extra padding goes to the bottom: {:?}", w.pad());
        assert!(r == l || r == l + 1, "extra padding goes to the right: {:?}", w.pad());
    }
    assert_eq!(Padding::Symmetric(2).amounts(5, 6, 5, 1, 1), [2; 4]);
}

#[test]
fn windows_that_do_not_fit_are_errors_naming_the_op() {
    let e = Window::new("my_op", 2, 2, 3, 1, [0; 4]).unwrap_err().to_string();
    assert!(e.starts_with("my_op:") && e.contains("smaller"), "{e}");
    assert!(Window::new("my_op", 8, 8, 3, 0, [0; 4]).is_err(), "stride 0");
    assert!(Window::new("my_op", 8, 8, 0, 1, [0; 4]).is_err(), "kernel 0");
    assert!(Window::new("my_op", 2, 2, 3, 1, [1; 4]).is_ok(), "padding makes it fit");
}
